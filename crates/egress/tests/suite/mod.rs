mod binary;
mod common;
mod dlp;
mod forwarded;
mod http2;
mod rules;
mod safety;
mod streaming;
