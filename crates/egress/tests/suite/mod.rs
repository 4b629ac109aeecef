mod binary;
mod blocked;
mod common;
mod forwarded;
mod http2;
mod rules;
mod safety;
mod streaming;
