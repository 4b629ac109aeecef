mod manifest_cli;
mod scan_cli;
