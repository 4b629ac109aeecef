mod supervise_cli;
