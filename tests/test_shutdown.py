"""Clean shutdown during training (issue 14 item 5): SIGINT or SIGTERM while the trainer service is in a
round ends the process promptly (no wait for the epoch's end, no SIGABRT) with exit code 0, leaving no
scratch directory and the round reported as cancelled; ``avsurv train`` ends on either signal as on Ctrl-C
(exit 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from platformkit import wait_for

from avsurv.adapters.state import close_state, connect_state
from avsurv.cli import main
from avsurv.constants import CLIP_FRAMES_SHAPE, MEL_FRAMES, N_MELS
from avsurv.media.clipstore import ClipWriter
from avsurv.media.segment import Clip
from avsurv.platform.archive import ClipArchive
from avsurv.platform.messages import clip_to_message
from avsurv.platform.registry import Registry

STOP_S = 25.0
"""Longest a process may take to end once signalled: a batch, then every service and store closing (the old
trainer went on with its epoch until the 30 s join timeout, then the process exited under it)."""
TRAINING = "trainer: training"
TRAIN_SIGNAL_S = 2.0
"""When avsurv train is sent SIGTERM: into its run of 200 epochs."""


CLIPS = 24
"""Stored clips of noise: enough for a round (train_min_clips is at least 10), quick to write."""


def _clips() -> Iterator[Clip]:
    rng = np.random.default_rng(0)
    for second in range(CLIPS):
        yield Clip(camera_id="cam0", start=float(second), capture_time=1.7e9 + second, source="noise",
                   has_audio=True, frames=rng.integers(0, 256, CLIP_FRAMES_SHAPE, np.uint8),
                   log_mel=rng.normal(-40, 10, (1, N_MELS, MEL_FRAMES)).astype(np.float32))


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "avsurv.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env})


def _stop(process: subprocess.Popen, log: Path, sign: signal.Signals, started: str) -> tuple[int, float]:
    """Signals ``process`` once ``started`` is in its log; its exit code and how long it took to end."""
    wait_for(lambda: started in log.read_text() or process.poll() is not None, 120, started)
    assert process.poll() is None, log.read_text()[-2000:]
    time.sleep(1.0)  # into the round's batches
    signalled = time.monotonic()
    process.send_signal(sign)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return code, time.monotonic() - signalled


def test_sigint_during_a_training_round_ends_the_platform_cleanly(tmp_path: Path) -> None:
    """SIGTERM takes the same path (the runtime handles both alike); one process run keeps CI short."""
    data, log = tmp_path / "data", tmp_path / "run.log"
    archive = ClipArchive(data / "clips")
    for clip in _clips():
        archive.put(clip_to_message(clip, "default"))
    process = _start(["run", "--data-dir", str(data), "--grpc-port", "0"], log, AVSURV_TRAIN_MIN_CLIPS="10",
                     AVSURV_TRAIN_EVERY_S="1", AVSURV_TRAIN_EPOCHS="200", AVSURV_TRAIN_PROFILE="tiny",
                     AVSURV_DASHBOARD_PORT="0")
    code, took = _stop(process, log, signal.SIGINT, TRAINING)
    output = log.read_text()
    assert code == 0, output[-3000:]  # -6 is SIGABRT
    assert took < STOP_S, f"took {took:.1f} s to stop:\n{output[-3000:]}"
    assert list(data.glob("avsurv-train-*")) == [], "the round's scratch directory was left"
    state = connect_state(f"embedded://{data / 'state.db'}")
    try:
        status = Registry(state, "default").trainer_status()
    finally:
        close_state(state)
    assert status["state"] == "cancelled" and "shut down" in status["detail"], status


def test_sigterm_during_avsurv_train_ends_it_as_ctrl_c_does(tmp_path: Path) -> None:
    """In this process (a second one would double the test's time); the default SIGTERM would end the run with
    -15 and no word."""
    with ClipWriter(tmp_path / "clips") as writer:
        for clip in _clips():
            writer.add(clip)
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(TRAIN_SIGNAL_S, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = main(["train", str(tmp_path / "clips"), "--out", str(tmp_path / "model"), "--profile", "tiny",
                     "--epochs", "200", "--no-progress"])
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
    assert code == 130
