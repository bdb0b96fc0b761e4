"""Reorganisation plans (issue 5): validation, dry run, approval, execution."""
