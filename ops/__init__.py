"""Operations: health and readiness endpoints, clock health, the shared metrics exposition, and the
contract between the running cameras and the console (`cameras.py`).

Importable by every role (edge, pool, sealer, drafter, console); holds no business logic.
"""
