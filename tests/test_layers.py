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


def test_a_planted_import_between_services_or_from_the_core_breaks_their_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "avsurv"
    shutil.copytree(Path(avsurv.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path, planted in [(copy / "services" / "search" / "__init__.py", "avsurv.services.ingest"),
                          (copy / "platform" / "registry.py", "avsurv.services.trainer")]:
        path.write_text(path.read_text() + f"\nimport {planted}  # planted\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "the services do not import each other BROKEN" in result.stdout
    assert "avsurv.services.search is not allowed to import avsurv.services.ingest" in result.stdout
    assert "the core does not import the services BROKEN" in result.stdout
    assert "avsurv.platform.registry -> avsurv.services.trainer" in result.stdout


# What a service process loads: `avsurv serve ingest` needs neither torch nor the vector store's client.
_HEAVY = ("torch", "qdrant_client")


def _loads(code: str, cwd: Path) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code`` (from another directory)."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {_HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


def test_the_ingest_service_imports_no_torch(tmp_path: Path) -> None:
    assert _loads("import avsurv.services.ingest", tmp_path) == []
    assert _loads("import avsurv.services.search", tmp_path) == list(_HEAVY)  # the probe sees them


def test_an_ingest_process_builds_and_runs_without_torch(tmp_path: Path) -> None:
    code = ("from pathlib import Path\n"
            "from avsurv.platform.config import load_settings\n"
            "from avsurv.platform.runtime import Runtime\n"
            "settings = load_settings(environ={}, data_dir=Path('data'), grpc_port=0)\n"
            "runtime = Runtime(['ingest'], settings, embedded=True)\n"
            "assert type(runtime.workers['ingest']).__name__ == 'IngestService'\n"
            "runtime.start()\n"
            "runtime.stop()")
    assert _loads(code, tmp_path) == []
