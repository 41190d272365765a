"""`python -m bench.e2e`: the end-to-end benchmark (see run.py)."""

from bench.e2e.run import main

main()
