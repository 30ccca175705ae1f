"""Command-line interface: one console script, one module per subcommand."""
