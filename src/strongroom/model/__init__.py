"""Plain values and their codecs: trees of file entries, recovery points."""
