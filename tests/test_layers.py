"""The core's import contracts (pyproject.toml, [tool.importlinter]) hold on the code as it is, and catch
an upward import planted in a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import avsurv

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contracts over the ``avsurv`` package found in ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=package_parent,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_core_imports_only_downward() -> None:
    result = _lint(Path(avsurv.__file__).parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_planted_upward_import_breaks_its_floors_contract(tmp_path: Path) -> None:
    copy = tmp_path / "avsurv"
    shutil.copytree(Path(avsurv.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    background = copy / "media" / "background.py"
    background.write_text(background.read_text() + "\nfrom avsurv.platform import registry  # planted\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "media imports only the base BROKEN" in result.stdout
    assert "avsurv.media.background -> avsurv.platform.registry" in result.stdout
    assert "models import only media and the base KEPT" in result.stdout  # only the planted floor breaks
