mod binary;
mod common;
mod forwarded;
mod grants;
mod http2;
mod rules;
mod safety;
mod streaming;
