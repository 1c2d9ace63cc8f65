"""The streaming engine: where sources meet the repository."""
