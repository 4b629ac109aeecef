//! The qemu backend: the agent in a micro-VM behind its own kernel, QEMU itself jailed.
//!
//! What the backend stands on lives apart from the backend proper: [`assets`] finds or prepares
//! the guest kernel (`bot-bottle prepare qemu`) and chooses the accelerator, [`kvm`] probes
//! whether KVM can really boot a guest here (cached), [`preflight`] gives `doctor` its checks.

pub mod assets;
pub mod kvm;
pub mod preflight;
