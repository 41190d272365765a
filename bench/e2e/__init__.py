"""End-to-end benchmark of the whole pipeline (see run.py)."""
