mod gitea;
mod objects;
mod serve;
mod ssh;
mod support;
