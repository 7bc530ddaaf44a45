"""Storage: TinyDB task definitions and per-company SQLite outboxes."""
