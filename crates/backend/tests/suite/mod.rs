mod docker;
mod limits;
mod native;
mod qemu;
mod qemu_assets;
mod support;
