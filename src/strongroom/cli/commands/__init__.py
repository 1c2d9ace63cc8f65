"""One module per command; `main.py` registers them."""
