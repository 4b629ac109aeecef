mod scan_cli;
