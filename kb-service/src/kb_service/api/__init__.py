"""HTTP routers of the kb service."""
