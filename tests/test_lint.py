"""The code passes the project's lint: pyflakes' errors, pycodestyle's, import order."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_the_code_passes_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "E,F,W,I",
                             "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
