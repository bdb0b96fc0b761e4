"""PKCS#11: module loading, session pool, HSM keys that look like cryptography keys, ceremonies."""
