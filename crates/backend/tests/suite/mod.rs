mod native;
mod support;
