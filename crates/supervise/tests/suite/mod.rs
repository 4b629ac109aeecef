mod common;
mod effect;
mod egress_live;
mod engine;
mod grants;
mod http;
mod idle;
mod python_sdk;
