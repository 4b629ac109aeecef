//! Secret scanner (not written yet).
