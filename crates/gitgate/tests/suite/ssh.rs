//! Deploy keys over a real sshd on loopback.
