"""HTTP routers of the routing service."""
