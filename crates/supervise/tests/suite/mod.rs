mod common;
mod effect;
mod egress_live;
mod engine;
mod http;
mod idle;
mod python_sdk;
