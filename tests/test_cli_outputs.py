"""What the command line leaves behind when it refuses or fails (issue 13, the README walked through): a
rerun of the same command must work, and nothing may appear that the user did not ask for."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import mediagen as mg
import numpy as np
import pytest

import avsurv.platform.runtime as runtime
from avsurv.cli import main

# --- avsurv synth ---------------------------------------------------------------------------------

SMALL_SCENE = ["--duration", "5", "--cameras", "1", "--width", "64", "--height", "64", "--no-progress"]


def test_synth_refuses_a_non_empty_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["synth", "--out", str(tmp_path), *SMALL_SCENE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"avsurv synth: error: {tmp_path} is not empty (notes.txt)") and "--force" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_synth_force_replaces_the_old_scene_and_keeps_other_files(tmp_path: Path) -> None:
    for name in ("cam0.mp4", "cam2.mp4", "ground_truth.json"):
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["synth", "--out", str(tmp_path), "--force", *SMALL_SCENE]) == 0
    # the old render's third camera would otherwise sit beside a ground truth that does not list it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam0.mp4", "ground_truth.json", "notes.txt"]
    assert json.loads((tmp_path / "ground_truth.json").read_text())["cameras"][0]["file"] == "cam0.mp4"
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- avsurv segment -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mg.write(tmp_path_factory.mktemp("media") / "gate.mp4", mg.Spec(duration=2.0))


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_segment_keeps_nothing_and_the_same_command_runs_again(
        video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: bool) -> None:
    out = tmp_path / "clips"
    if existing:  # an empty directory the user made: it stays, empty
        out.mkdir()
    argv = ["segment", str(video), str(tmp_path / "missing.mp4"), "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot open" in err and f"nothing was kept in {out}" in err
    assert (sorted(out.iterdir()) == []) if existing else not out.exists()
    (tmp_path / "missing.mp4").write_bytes(video.read_bytes())
    assert main(argv) == 0
    assert f"wrote 4 clips to {out}" in capsys.readouterr().out


# --- avsurv heads eval / attach -------------------------------------------------------------------

def write_embeddings(path: Path, camera: str, seconds: int, seed: int) -> Path:
    """An embeddings .npz as `avsurv embed` writes it (README, "avsurv embed"), with random vectors."""
    rng = np.random.default_rng(seed)
    starts = np.arange(float(seconds))
    np.savez(path, clip_start=starts, z_v=rng.normal(size=(seconds, 16)).astype(np.float32),
             z_a=rng.normal(size=(seconds, 16)).astype(np.float32),
             clip_id=np.array([f"{camera}:{int(s * 1000)}" for s in starts]), camera_id=np.array([camera] * seconds),
             capture_time=np.full(seconds, np.nan), has_audio=np.ones(seconds, dtype=bool),
             source=np.array([f"/v/{camera}.mp4"] * seconds), format=np.str_("avsurv-embeddings-v1"),
             model_sha256=np.str_("ab" * 32), profile=np.str_("test"), method=np.str_("epg"))
    return path


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tacma head trained one epoch on cam0; labels for cam0 only."""
    root = tmp_path_factory.mktemp("heads")
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([["camera_id", "t", "label"],
                                      *(["cam0", t, "car" if t % 4 < 2 else "background"] for t in range(20))])
    files = {"labels": labels, "cam0": write_embeddings(root / "cam0.npz", "cam0", 20, 1),
             "cam2": write_embeddings(root / "cam2.npz", "cam2", 20, 2), "head": root / "head"}
    assert main(["heads", "train", "tacma", "--train", str(files["cam0"]), "--labels", str(labels), "--out",
                 str(files["head"]), "--window", "5", "--epochs", "1", "--threads", "1", "--no-progress"]) == 0
    return files


def test_heads_eval_fails_on_a_test_set_it_cannot_score(head: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = ["heads", "eval", "--model", str(head["head"]), "--labels", str(head["labels"]), "--test"]
    assert main([*argv, str(head["cam0"])]) == 0
    capsys.readouterr()
    assert main([*argv, str(head["cam0"]), str(head["cam2"])]) == 2  # the labels name no second of cam2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"avsurv heads eval: error: no clip scored in {head['cam2']} (20 unlabelled")


@pytest.mark.parametrize(("extra", "expected"), [([], "not a model directory"),
                                                 (["--name", "bad name"], "a head's name"),
                                                 (["--labels", "horse"], "has no class")])
def test_a_refused_heads_attach_creates_no_data_dir(head: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], extra: list[str],
                                                    expected: str) -> None:
    directory = head["head"] if extra else tmp_path / "not-a-head"
    assert main(["heads", "attach", "cam0", str(directory), "--data-dir", str(tmp_path / "data"), *extra]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


# --- avsurv serve ---------------------------------------------------------------------------------

def test_serve_prints_its_configuration_before_connecting(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    def unreachable(*_: object, **__: object) -> None:
        raise ConnectionError("kafka unreachable")

    monkeypatch.setenv("AVSURV_BUS", "kafka://user:secret@127.0.0.1:9")
    monkeypatch.setattr(runtime, "open_ports", unreachable)
    with caplog.at_level(logging.INFO, logger="avsurv"), pytest.raises(ConnectionError):
        main(["serve", "ingest"])
    lines = [r.getMessage() for r in caplog.records if "configuration" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("avsurv ingest: configuration {")
    config = json.loads(lines[0].split("configuration ", 1)[1])
    assert config["bus"] == "kafka://user:***@127.0.0.1:9"  # passwords masked
