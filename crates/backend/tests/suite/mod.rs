mod docker;
mod limits;
mod native;
mod qemu;
mod support;
