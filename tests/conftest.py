"""Fixtures shared by several test files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def quick_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of ``bench/suite.py --quick`` (as CI runs it): the directory holding RESULTS.md and results/."""
    out = tmp_path_factory.mktemp("suite")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "suite.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return out
