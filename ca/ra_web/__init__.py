"""Flask-free queries and actions behind the RA portal's pages (always through a Scope)."""
