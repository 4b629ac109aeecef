//! Manifest loading (not written yet).
