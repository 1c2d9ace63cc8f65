"""The deduplicating, encrypted repository: chunks, packs, index, points, keys, locks."""
