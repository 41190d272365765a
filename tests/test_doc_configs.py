"""Every TOML config example in the docs loads with the daemon's own `config check`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(REPO.glob("*/README.md"))]


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)):
            found.append((f"{doc.relative_to(REPO)}#{i + 1}", block))
    return found


EXAMPLES = examples()


def test_the_docs_have_config_examples() -> None:
    assert len(EXAMPLES) >= 2, [name for name, _ in EXAMPLES]


@pytest.mark.parametrize(("name", "text"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_config_example_passes_config_check(name: str, text: str, tmp_path: Path) -> None:
    # The files an example names (/etc/...: password files, CA) are made, private, under a temporary root.
    def local(m: re.Match[str]) -> str:
        path = tmp_path / m.group(1).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("secret\n")
        path.chmod(0o600)
        return f'"{path}"'

    text = re.sub(r'"(/etc/[^"]+)"', local, text)
    config = tmp_path / "config.toml"
    config.write_text(text)
    config.chmod(0o600)
    daemon = "edge" if "[gateway]" in text else "cloud"
    proc = subprocess.run([sys.executable, "-m", f"{daemon}.cli", "config", "check", "--config", str(config)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"{name}: {proc.stderr}"
