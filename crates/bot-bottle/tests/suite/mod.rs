mod manifest_cli;
