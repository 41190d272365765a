"""Optional C code for the cloud receiver's hottest per-reading steps (see _speedups.c). cloud/ uses it when this
package is installed and its own pure-Python code otherwise, with the same results either way."""

from edge_gw_speedups._speedups import df5_fields, fingerprint, keep_arenas, line

__all__ = ["df5_fields", "fingerprint", "keep_arenas", "line"]
