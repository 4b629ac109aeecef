mod common;
mod egress_live;
mod engine;
mod http;
mod python_sdk;
