//! Git gate (not written yet).
