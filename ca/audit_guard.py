"""Append-only enforcement in the database itself: triggers refusing UPDATE/DELETE of audit rows.

The migration calls `install_append_only(op.get_bind())` (and `drop_append_only` on downgrade).
A database superuser can still disable triggers; that is what the hash chain and the signed
checkpoints are for. Production should also grant the application role only SELECT and INSERT
on audit_event and audit_checkpoint (docs/audit.md).
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

MESSAGE = "GovCA audit trail is append-only"
# (table, operations refused); audit_head may only move forward, audit_key rows only change status
_ROW_RULES = (("audit_event", ("UPDATE", "DELETE")), ("audit_checkpoint", ("UPDATE", "DELETE")),
              ("audit_head", ("DELETE",)), ("audit_key", ("DELETE",)))

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION govca_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'audit_head' AND TG_OP = 'UPDATE' THEN
    IF NEW.seq >= OLD.seq AND NEW.id = OLD.id THEN RETURN NEW; END IF;
  END IF;
  RAISE EXCEPTION '{MESSAGE}: % on % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$
"""


def _names(table: str, op: str) -> str:
    return f"{table}_append_only_{op.lower()}"


def install_append_only(conn: Connection) -> None:
    """Create (or re-create) the triggers; idempotent, on PostgreSQL and SQLite."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text(_PG_FUNCTION))
        for table, ops in _ROW_RULES + (("audit_head", ("UPDATE",)),):
            for op in ops:
                name = _names(table, op)
                conn.execute(text(f'DROP TRIGGER IF EXISTS {name} ON "{table}"'))
                conn.execute(text(f'CREATE TRIGGER {name} BEFORE {op} ON "{table}" FOR EACH ROW '
                                  f'EXECUTE FUNCTION govca_audit_append_only()'))
    elif dialect == "sqlite":
        for table, ops in _ROW_RULES:
            for op in ops:
                name = _names(table, op)
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
                conn.execute(text(
                    f"CREATE TRIGGER {name} BEFORE {op} ON {table} BEGIN SELECT RAISE(ABORT, "
                    f"'{MESSAGE}: {op} on {table} refused'); END"))
        name = _names("audit_head", "update")
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        conn.execute(text(
            f"CREATE TRIGGER {name} BEFORE UPDATE ON audit_head WHEN NEW.seq < OLD.seq OR "
            f"NEW.id <> OLD.id BEGIN SELECT RAISE(ABORT, '{MESSAGE}: the head only moves "
            f"forward'); END"))
    else:  # pragma: no cover - other backends are not supported
        raise NotImplementedError(f"append-only triggers for {dialect}")


def drop_append_only(conn: Connection) -> None:
    dialect = conn.dialect.name
    for table, ops in _ROW_RULES + (("audit_head", ("UPDATE",)),):
        for op in ops:
            name = _names(table, op)
            if dialect == "postgresql":
                conn.execute(text(f'DROP TRIGGER IF EXISTS {name} ON "{table}"'))
            else:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    if dialect == "postgresql":
        conn.execute(text("DROP FUNCTION IF EXISTS govca_audit_append_only()"))


def append_only_installed(conn: Connection) -> bool:
    """Whether the audit_event triggers are present (and, on PostgreSQL, enabled)."""
    if conn.dialect.name == "postgresql":
        n = conn.execute(text(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relname = 'audit_event' AND t.tgname LIKE 'audit_event_append_only_%' "
            "AND t.tgenabled <> 'D'")).scalar_one()
    else:
        n = conn.execute(text(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = "
            "'audit_event' AND name LIKE 'audit_event_append_only_%'")).scalar_one()
    return n >= 2
