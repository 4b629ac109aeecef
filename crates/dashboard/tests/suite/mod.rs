mod dlp;
mod editor;
mod fixtures;
mod keys;
mod screens;
mod watch;
