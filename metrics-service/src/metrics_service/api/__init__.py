"""HTTP routers of the metrics service."""
