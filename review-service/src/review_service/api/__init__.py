"""HTTP routers of the review service."""
