//! Integration tests of the manifest crate, compiled as one binary.
mod suite;
