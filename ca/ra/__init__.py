"""The delegated registration authority: users, roles, scope, requests and deadlines (no Flask)."""
