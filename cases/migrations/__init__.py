"""Alembic migrations of the case database (run by :func:`nonsite.cases.db.migrate`; ``nonsite cases migrate``).

New revision: change the models in ``cases/db.py``, then write ``versions/NNNN_<what>.py`` by hand or with
``alembic revision --autogenerate`` against a database at head; ``tests/test_cases_migrations.py`` checks
that the migrated schema matches the models on SQLite and PostgreSQL.
"""
