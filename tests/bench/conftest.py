"""The benchmark scripts' tests run each script as a user does: a fresh Python process from the
repository (bench/ is no package, and its features.py would shadow the `features` package).
A change to a function they call (``fit_and_evaluate`` returning a fourth value) broke three of them
for a day without a test noticing. The figures they print are not asserted, only their shape:
measurements are for the README, not for a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(tmp_path):
    """Run ``bench/SCRIPT`` with arguments from a temp folder; the completed process."""
    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    return run
