mod apple;
mod docker;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod limits;
mod native;
mod qemu;
mod qemu_assets;
mod smolmachines;
mod support;
mod vm_contract;
