"""Pure routing rules (no I/O)."""
