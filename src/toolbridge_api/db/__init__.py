"""Storage: the schema, its migrations, and the one place that reads and writes rows."""
