mod binary;
mod common;
mod http2;
mod rules;
mod safety;
mod streaming;
