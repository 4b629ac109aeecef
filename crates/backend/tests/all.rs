//! Integration tests of the backends with real kernel namespaces (one test binary).

mod suite;
