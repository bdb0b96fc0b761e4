"""Issuance: the pure certificate builder, integrity checks, and the numbered issuance cycle."""
