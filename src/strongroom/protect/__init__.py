"""Protection that runs in cycles: the VHD backup mode now, continuous protection later."""
