mod docker;
mod limits;
mod native;
mod support;
