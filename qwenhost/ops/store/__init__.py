"""The store: API keys, the usage ledger and rate-limit windows on SQLAlchemy Core (SQLite by default,
PostgreSQL by URL), one code path for both. database.py opens and migrates; the other modules query."""
