mod bad_files;
mod clients;
mod doctor;
mod manifest_cli;
mod readme;
mod scan_cli;
mod start;
mod supervise_cli;
