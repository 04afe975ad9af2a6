"""The testing guide's snippet is executed as a user's own test suite would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)


def test_the_tracking_server_snippet_passes_as_a_users_test(tmp_path: Path) -> None:
    (snippet,) = [b for b in python_blocks("testing.md") if "TrackingServer" in b]
    (tmp_path / "test_snippet.py").write_text(snippet)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
