"""Fixtures of the security tests (helpers live in security_helpers.py)."""

from security_helpers import pair  # noqa: F401  (pytest fixture)
