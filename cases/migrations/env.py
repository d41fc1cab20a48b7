"""Alembic environment: migrations run on the connection :func:`nonsite.cases.db.migrate` passes in."""

from __future__ import annotations

from alembic import context

from nonsite.cases.db import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run the case database migrations with `nonsite cases migrate` (or nonsite.cases.db.migrate), "
            "which passes the connection in"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run `nonsite cases migrate`")
run()
