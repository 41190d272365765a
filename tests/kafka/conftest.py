"""The Kafka suites use the receiver tests' helpers (tests/cloud/test_receiver_support.py): publishers, readings,
create_db, wait_until. The folder is named like the `cloud` package, so it goes on the path as a plain folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))
