"""Operations: health and readiness endpoints, clock health, the shared metrics exposition.

Importable by every role (edge, pool, sealer, drafter, console); holds no business logic.
"""
