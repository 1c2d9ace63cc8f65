"""strongroom: deduplicating, encrypted data protection."""

__version__ = "0.1.0"
