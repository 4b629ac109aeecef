mod common;
mod engine;
mod http;
mod python_sdk;
