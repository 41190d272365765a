"""Fixtures for tests/grafana; the machinery lives in pipeline.py (a plain module, importable by the tests)."""

from pipeline import filled

__all__ = ["filled"]
