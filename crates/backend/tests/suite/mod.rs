mod docker;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod limits;
mod native;
mod qemu;
mod qemu_assets;
mod support;
