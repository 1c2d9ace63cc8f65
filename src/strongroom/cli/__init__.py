"""The command-line interface: argument parsing and output only; work is in services."""
