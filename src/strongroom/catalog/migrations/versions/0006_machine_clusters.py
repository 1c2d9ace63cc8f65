"""Clusters of machines: the nodes that share a VM's disks (docs/server.md,
"VMs through the server").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

One nullable column on `machines`: the name of the cluster an administrator
put the machine in (NULL: none). A VM point an agent commits belongs to its
machine's cluster, so any node of the cluster may take the next one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("cluster", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("cluster")
