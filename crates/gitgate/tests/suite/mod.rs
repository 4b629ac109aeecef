mod gitea;
mod objects;
mod serve;
mod soak;
mod ssh;
mod support;
