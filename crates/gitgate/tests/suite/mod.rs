mod gitea;
mod serve;
mod ssh;
mod support;
