"""Fixtures for tests/ansible; the machinery lives in provision.py (a plain module, importable by the tests)."""

from provision import daemons, provisioned

__all__ = ["daemons", "provisioned"]
