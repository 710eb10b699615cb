"""The README's walkthrough, run as a new user would run it (issue 13): every ```bash block of the section
"## Walkthrough", in order, in an empty directory, each command required to exit 0.

Only the inputs are smaller, by the substitutions the README names (a 20-second scene at 320x180, one
training epoch, heads on windows of 5 clips for 2 epochs, platform settings through ``AVSURV_*``
variables). The commands run in this process
through ``avsurv.cli.main`` rather than one ``avsurv`` process each: every process start imports torch
and the rest for about 5 s on these machines, which alone would take longer than the walkthrough's work.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from avsurv.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Walkthrough"

ENVIRONMENT = {
    "AVSURV_ANOMALY_RUN_IDLE_S": "2",  # `run --exit-when-done` waits this long for open events to close
    "AVSURV_GRPC_PORT": "0",  # any free port: other tests or a running platform may hold 50051
}


def walkthrough(text: str) -> list[list[str]]:
    """The argument lists of the walkthrough's commands, in order (comments dropped, continuations joined)."""
    if f"\n{SECTION}" not in text:
        raise AssertionError(f"README.md has no section {SECTION!r}")
    section = text.split(f"\n{SECTION}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    return [words for block in blocks for line in block.replace("\\\n", " ").splitlines()
            if (words := shlex.split(line, comments=True))]


def smaller(argv: list[str]) -> tuple[list[str], set[str]]:
    """``argv`` with the README's documented small inputs, and the names of the substitutions made."""
    argv, made = list(argv), set()

    def set_value(option: str, value: str, name: str) -> None:
        if option in argv:
            argv[argv.index(option) + 1] = value
            made.add(name)

    if argv[:2] == ["avsurv", "synth"]:
        set_value("--duration", "20", "duration")
        argv += ["--width", "320", "--height", "180"]
        made.add("size")
    if argv[:2] == ["avsurv", "train"]:
        set_value("--epochs", "1", "epochs")
    if argv[:3] == ["avsurv", "heads", "train"]:
        # windows of 5: a 20 s scene has 4 per camera, enough for AVACA to see normal and anomalous ones
        argv += ["--window", "5", "--epochs", "2"]
        made.add("heads")
    return argv, made


def test_the_walkthrough_is_one_path_through_every_command() -> None:
    commands = walkthrough(README.read_text())
    assert commands and all(words[0] == "avsurv" for words in commands), \
        [words for words in commands if words[0] != "avsurv"]  # anything else needs this test extended
    steps = [" ".join(words[1:3]) if words[1] == "heads" else words[1] for words in commands]
    for step in ("synth", "segment", "train", "embed", "anomalies", "calibrate", "search", "probe", "heads train",
                 "heads eval", "heads apply", "heads attach", "heads attached", "heads detach", "run"):
        assert step in steps, f"the walkthrough has no `avsurv {step}`"
    assert steps[0] == "synth" and steps.index("run") > steps.index("heads attach")
    made = set().union(*(smaller(words)[1] for words in commands))
    assert made == {"duration", "size", "epochs", "heads"}, f"a documented substitution no longer applies: {made}"


def test_every_walkthrough_command_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for words in walkthrough(README.read_text()):
        argv = smaller(words)[0]
        start = time.perf_counter()
        code = main(argv[1:])
        captured = capsys.readouterr()
        with capsys.disabled():  # where the time goes, in the test log
            print(f"\n{time.perf_counter() - start:6.1f} s  {shlex.join(argv)}", end="")
        assert code == 0, f"`{shlex.join(argv)}` exited {code}:\n{captured.err[-3000:]}"
    # what later steps and a reader rely on
    for made in ("scene/cam2.mp4", "clips/clips.jsonl", "model-epg/model.safetensors", "cam2.npz", "events.jsonl",
                 "calibration.json", "head-ccln", "scores.jsonl", "avsurv-data"):
        assert (tmp_path / made).exists(), made
