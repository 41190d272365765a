"""`make bench`: the benchmarks that need nothing but this repo's venv and the two servers, one after the other.

The end-to-end run (`python -m bench.e2e`), the comparisons with other tools (bench/setup_peers_gateway.sh first)
and the Kafka client figures take longer or need a setup step: run them on their own (docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ["bench_decode.py", "bench_parse.py", "bench_accept.py", "bench_store.py", "bench_timing.py", "bench_drain.py",
         "bench_pipeline.py", "bench_ingest.py"]


def main() -> int:
    failed = []
    for name in QUICK:
        print(f"\n=== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
