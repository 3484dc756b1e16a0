"""users.credentials_version: the stamp logins and password changes are conditional on

Revision ID: 0003_credentials_version
Revises: 0004_session_details
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003_credentials_version"
down_revision: str | None = "0004_session_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows start at 0: logins in flight during the upgrade verified no stamp yet.
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("credentials_version", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("credentials_version")
