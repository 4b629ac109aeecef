mod common;
mod effect;
mod egress_live;
mod engine;
mod http;
mod python_sdk;
