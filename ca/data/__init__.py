"""Reference data shipped with GovCA (the 2025 province map)."""
