"""hypothesis strategies for property-testing sheaves (needs the `test` extra)."""
