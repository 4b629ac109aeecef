//! Egress proxy (not written yet).
