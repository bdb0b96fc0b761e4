"""Server-rendered pages (Vietnamese by default)."""
