"""token_families: what the sessions API shows of a login (address, user agent, amr, times)

Revision ID: 0004_session_details
Revises: 0002_refresh_tokens
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004_session_details"
down_revision: str | None = "0002_refresh_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("token_families") as batch:
        batch.add_column(sa.Column("ip", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(length=256), nullable=True))
        # Every login made before this revision was a password login.
        batch.add_column(
            sa.Column("amr", sa.String(length=32), server_default="pwd", nullable=False)
        )
        batch.add_column(sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    # Logins in place keep working: their login time is their creation, and so is their last
    # known use (no refresh recorded one).
    op.execute("UPDATE token_families SET auth_time = created_at, last_used_at = created_at")
    with op.batch_alter_table("token_families") as batch:
        batch.alter_column("amr", server_default=None)
        batch.alter_column("auth_time", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("last_used_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("token_families") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("auth_time")
        batch.drop_column("amr")
        batch.drop_column("user_agent")
        batch.drop_column("ip")
