"""The application API: keys, idempotent requests, metadata pairs, asked-for jobs, indexes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

# The metadata pairs the API filters on (`meta.KEY=VALUE`) are kept by triggers, so that
# every writer of `submissions.meta` (the CLI, imports, submit, the API, whatever comes
# next) keeps them right without knowing of them. A webhook's UPDATE never sets `meta`,
# so the webhook path never runs them. Values: strings, numbers and booleans of at most
# 200 characters (an index entry has a size limit); the others are not filterable.
_SQLITE_PAIRS = """
    SELECT NEW.id, pair.key,
           CASE pair.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                ELSE CAST(pair.value AS TEXT) END
    FROM json_each(NEW.meta) AS pair
    WHERE json_type(NEW.meta) = 'object'
      AND pair.type IN ('text', 'integer', 'real', 'true', 'false')
      AND length(pair.key) <= 200 AND length(CAST(pair.value AS TEXT)) <= 200
"""
SQLITE_TRIGGERS = (
    f"""
    CREATE TRIGGER submission_meta_on_insert AFTER INSERT ON submissions
    BEGIN
        INSERT OR IGNORE INTO submission_meta (submission_pk, key, value) {_SQLITE_PAIRS};
    END
    """,
    f"""
    CREATE TRIGGER submission_meta_on_update AFTER UPDATE OF meta ON submissions
    BEGIN
        DELETE FROM submission_meta WHERE submission_pk = OLD.id;
        INSERT OR IGNORE INTO submission_meta (submission_pk, key, value) {_SQLITE_PAIRS};
    END
    """,
)
POSTGRESQL_TRIGGERS = (
    """
    CREATE FUNCTION submission_meta_sync() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM submission_meta WHERE submission_pk = OLD.id;
        END IF;
        IF jsonb_typeof(NEW.meta) = 'object' THEN
            INSERT INTO submission_meta (submission_pk, key, value)
            SELECT NEW.id, pair.key, pair.value #>> '{}'
            FROM jsonb_each(NEW.meta) AS pair
            WHERE jsonb_typeof(pair.value) IN ('string', 'number', 'boolean')
              AND length(pair.key) <= 200 AND length(pair.value #>> '{}') <= 200
            ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER submission_meta_on_insert AFTER INSERT ON submissions
    FOR EACH ROW EXECUTE FUNCTION submission_meta_sync()
    """,
    """
    CREATE TRIGGER submission_meta_on_update AFTER UPDATE OF meta ON submissions
    FOR EACH ROW WHEN (OLD.meta IS DISTINCT FROM NEW.meta)
    EXECUTE FUNCTION submission_meta_sync()
    """,
)
_BACKFILL = {
    "sqlite": """
        INSERT OR IGNORE INTO submission_meta (submission_pk, key, value)
        SELECT submissions.id, pair.key,
               CASE pair.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                    ELSE CAST(pair.value AS TEXT) END
        FROM submissions, json_each(submissions.meta) AS pair
        WHERE json_type(submissions.meta) = 'object'
          AND pair.type IN ('text', 'integer', 'real', 'true', 'false')
          AND length(pair.key) <= 200 AND length(CAST(pair.value AS TEXT)) <= 200
    """,
    "postgresql": """
        INSERT INTO submission_meta (submission_pk, key, value)
        SELECT submissions.id, pair.key, pair.value #>> '{}'
        FROM submissions, jsonb_each(submissions.meta) AS pair
        WHERE jsonb_typeof(submissions.meta) = 'object'
          AND jsonb_typeof(pair.value) IN ('string', 'number', 'boolean')
          AND length(pair.key) <= 200 AND length(pair.value #>> '{}') <= 200
        ON CONFLICT DO NOTHING
    """,
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("job_requested_at", TIMESTAMP, nullable=True))
    # The owner's list, newest change first: (user_id) alone left a sort of all their rows.
    op.drop_index("ix_submissions_user_id", table_name="submissions")
    op.create_index(
        "ix_submissions_user_id_updated_at", "submissions", ["user_id", "updated_at"]
    )

    op.create_table(
        "submission_meta",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column(
            "submission_pk",
            sa.Integer(),
            sa.ForeignKey("submissions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", "value", "submission_pk"),
    )
    op.create_index("ix_submission_meta_submission_pk", "submission_meta", ["submission_pk"])
    op.execute(_BACKFILL[dialect])
    for statement in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS:
        op.execute(statement)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
    )
    op.create_index(
        "ux_api_keys_live_name",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )

    op.create_table(
        "api_idempotency",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "api_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("api_key_id", "idempotency_key", name="uq_api_idempotency_key"),
    )
    op.create_index("ix_api_idempotency_created_at", "api_idempotency", ["created_at"])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("api_idempotency")
    op.drop_table("api_keys")
    op.execute("DROP TRIGGER IF EXISTS submission_meta_on_update" + (
        "" if dialect == "sqlite" else " ON submissions"
    ))
    op.execute("DROP TRIGGER IF EXISTS submission_meta_on_insert" + (
        "" if dialect == "sqlite" else " ON submissions"
    ))
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS submission_meta_sync()")
    op.drop_table("submission_meta")
    op.drop_index("ix_submissions_user_id_updated_at", table_name="submissions")
    op.create_index("ix_submissions_user_id", "submissions", ["user_id"])
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("job_requested_at")
