mod common;
mod dlp;
mod effect;
mod egress_live;
mod engine;
mod http;
mod idle;
mod python_sdk;
