"""The agent's side of the backup server: its credentials file
(`config.py`), an HTTP client with failover over the server's addresses
(`client.py`) and `RemoteStore` (`store.py`), the chunk store through which
the unchanged file pipelines back up to and restore from the server."""
