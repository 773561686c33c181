"""Jobs: what a CLI command does, as plain functions the CLI, notebooks and tests call."""
