"""The `observd` command line: argv, logging set-up, exit codes, reports, the demo."""
