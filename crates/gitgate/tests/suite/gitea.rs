//! The gitea key provider against a fake Gitea API on loopback.
