"""HTTP routers of the intake service."""
