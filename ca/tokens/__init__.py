"""Key devices: registry and lifecycle, SO-PIN escrow, one-time unblock codes, PIN policy."""
