mod binary;
mod common;
mod rules;
mod safety;
mod streaming;
