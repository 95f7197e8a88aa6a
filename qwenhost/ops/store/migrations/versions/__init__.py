"""One module per schema revision (alembic reads them by file; this package makes them ship)."""
