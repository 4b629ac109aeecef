mod docker;
mod limits;
mod native;
mod qemu_assets;
mod support;
