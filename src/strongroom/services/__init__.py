"""Use cases shared by the CLI and the server: backup, restore, browse, forget, prune, check."""
