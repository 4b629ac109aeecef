mod docker;
mod native;
mod support;
