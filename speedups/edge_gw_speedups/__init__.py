"""Optional C speed-ups for edge-gw's cloud ingest. cloud/lineproto.py uses them when this package is installed and
its own pure-Python code otherwise, with the same bytes either way."""

from edge_gw_speedups._lineproto import line

__all__ = ["line"]
