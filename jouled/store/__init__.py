"""Stores: the local SQLite log (embedded default and durable spool) and InfluxDB."""
