"""Tests of the synthetic scene generator: options, determinism, real media, ground truth vs media, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from avsurv.synth import (
    ANOMALY_CLASSES,
    CLASSES,
    SOUND_ONLY_CLASSES,
    SceneConfig,
    generate_scene,
    register_cli,
)
from avsurv.synth.render import Background, screen_box
from avsurv.synth.scene import make_cameras, schedule_events
from avsurv.synth.truth import second_entry

# Seed 0 has an ambulance approaching from far off-screen right at the start: heard long before seen.
SCENE = SceneConfig(seed=0, duration_s=30, cameras=3, width=320, height=180, weather="clear", lighting="day")


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All video frames (n, h, w, 3) uint8 and all audio samples (2, n) float32 of a file."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = [f.to_ndarray() for f in container.decode(audio=0)]
    return np.stack(frames), np.concatenate(audio, axis=1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("scene")
    truth_path = generate_scene(SCENE, out, progress=False)
    return out, json.loads(truth_path.read_text())


@pytest.fixture(scope="module")
def media(scene: tuple[Path, dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out, truth = scene
    return {c["camera_id"]: decode(out / c["file"]) for c in truth["cameras"]}


@pytest.mark.parametrize(
    ("options", "option_name"),
    [
        ({"fps": 24}, "fps"),
        ({"width": 321}, "width"),
        ({"height": 10}, "height"),
        ({"lighting": "dusk"}, "lighting"),
        ({"weather": "snow"}, "weather"),
        ({"cameras": 0}, "cameras"),
        ({"duration_s": 2.5}, "duration"),
        ({"anomalies_per_10min": -1.0}, "anomalies-per-10min"),
        ({"traffic": -0.5}, "traffic"),
        ({"jobs": 0}, "jobs"),
    ],
)
def test_invalid_options_raise_one_line_error(options: dict[str, Any], option_name: str) -> None:
    with pytest.raises(ValueError, match=f"--{option_name}: must be") as info:
        SceneConfig(**options)
    assert "\n" not in str(info.value)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    config = SceneConfig(seed=3, duration_s=6, cameras=2, width=160, height=96, lighting="cycle",
                         weather="rain")
    first = generate_scene(config, tmp_path / "a", progress=False)
    second = generate_scene(config, tmp_path / "b", progress=False)
    assert first.read_bytes() == second.read_bytes()
    for cam in ("cam0", "cam1"):
        assert (tmp_path / "a" / f"{cam}.mp4").read_bytes() == (tmp_path / "b" / f"{cam}.mp4").read_bytes()
        frames_a, audio_a = decode(tmp_path / "a" / f"{cam}.mp4")
        frames_b, audio_b = decode(tmp_path / "b" / f"{cam}.mp4")
        assert np.array_equal(frames_a, frames_b)
        assert np.array_equal(audio_a, audio_b)
    other = generate_scene(SceneConfig(**{**config.__dict__, "seed": 4}), tmp_path / "c", progress=False)
    assert json.loads(other.read_text())["events"] != json.loads(first.read_text())["events"]
    assert not np.array_equal(decode(tmp_path / "c" / "cam0.mp4")[1], audio_a)


def test_files_are_h264_aac_of_requested_format(scene: tuple[Path, dict[str, Any]],
                                                 media: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    out, _ = scene
    with av.open(str(out / "cam0.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert (video.width, video.height) == (SCENE.width, SCENE.height)
        assert video.average_rate == SCENE.fps
        assert audio.codec_context.name == "aac"
        assert audio.sample_rate == 48_000
        assert audio.channels == 2
    for frames, samples in media.values():
        assert frames.shape == (SCENE.frames, SCENE.height, SCENE.width, 3)
        assert abs(samples.shape[1] / 48_000 - SCENE.duration_s) <= 1 / SCENE.fps


def test_ground_truth_schema(scene: tuple[Path, dict[str, Any]]) -> None:
    out, truth = scene
    assert truth["format"] == "avsurv-scene-v1"
    assert (truth["seed"], truth["duration_s"], truth["fps"]) == (0, 30.0, 25)
    assert (truth["width"], truth["height"], truth["audio_rate"]) == (320, 180, 48_000)
    assert truth["classes"] == list(CLASSES)
    assert truth["anomaly_classes"] == list(ANOMALY_CLASSES)
    assert truth["sound_only_classes"] == list(SOUND_ONLY_CLASSES)
    assert [c["viewpoint"] for c in truth["cameras"]] == ["reference", "similar", "challenging"]
    assert all((out / c["file"]).is_file() and c["description"] for c in truth["cameras"])
    starts = [e["start_s"] for e in truth["events"]]
    assert starts == sorted(starts)
    assert [e["event_id"] for e in truth["events"]] == list(range(len(starts)))
    assert all(0 <= e["start_s"] < e["end_s"] <= 30.0 for e in truth["events"])
    assert set(truth["seconds"]) == {"cam0", "cam1", "cam2"}
    labels = set(CLASSES) | {"background"}
    for seconds in truth["seconds"].values():
        assert [s["t"] for s in seconds] == list(range(30))
        for s in seconds:
            assert set(s) == {"t", "visible", "audible", "event_ids", "anomaly", "label", "visual_label",
                              "audio_label"}
            assert set(s["visible"]) | set(s["audible"]) <= set(CLASSES)
            assert s["label"] in labels
            assert (s["label"] == "background") == (not s["visible"] and not s["audible"])


def test_per_modality_labels_name_what_is_seen_and_what_is_heard(scene: tuple[Path, dict[str, Any]]) -> None:
    _, truth = scene
    seconds = [s for camera in truth["seconds"].values() for s in camera]
    for s in seconds:
        assert (s["visual_label"] == "background") == (not s["visible"])
        assert not s["visible"] or s["visual_label"] in s["visible"]
        assert (s["audio_label"] == "background") == (not s["audible"])
        assert not s["audible"] or s["audio_label"] in s["audible"]
        assert s["label"] == (s["visual_label"] if s["visible"] else s["audio_label"])
    # The scene exercises both fields: seconds only heard (the approaching ambulance), and seen seconds
    # whose loudest sound is another class than the largest object.
    assert any(s["audible"] and not s["visible"] for s in seconds)
    assert any(s["visible"] and s["audible"] and s["visual_label"] != s["audio_label"] for s in seconds)


def test_second_entry_picks_the_largest_visible_and_the_loudest_audible_class() -> None:
    both = second_entry(4, {"car": 0.02, "bus": 0.05, "pedestrian": 0.01},
                        {"car": 0.1, "ambulance": 0.3, "motorbike": 0.2}, [3, 1])
    assert (both["visual_label"], both["audio_label"], both["label"]) == ("bus", "ambulance", "bus")
    assert (both["t"], both["event_ids"]) == (4, [1, 3])
    heard = second_entry(5, {}, {"train": 0.2, "police": 0.4, "car": 0.1}, [2])
    assert (heard["visual_label"], heard["audio_label"], heard["label"]) == ("background", "police", "police")
    seen = second_entry(6, {"bicycle": 0.01, "truck": 0.03, "car": 0.02}, {}, [0])
    assert (seen["visual_label"], seen["audio_label"], seen["label"]) == ("truck", "background", "truck")
    quiet = second_entry(7, {}, {}, [])
    assert (quiet["visual_label"], quiet["audio_label"], quiet["label"]) == ("background",) * 3
    # Ties go to the first name in sorted order, not to the order events were added.
    tie = second_entry(8, {"truck": 0.04, "car": 0.04}, {"truck": 0.2, "bus": 0.2}, [0, 1])
    assert (tie["visual_label"], tie["audio_label"], tie["label"]) == ("car", "bus", "car")


def test_anomaly_flags_and_sound_only_classes(scene: tuple[Path, dict[str, Any]]) -> None:
    _, truth = scene
    by_id = {e["event_id"]: e for e in truth["events"]}
    assert all(e["anomaly"] == (e["class"] in ANOMALY_CLASSES) for e in by_id.values())
    for seconds in truth["seconds"].values():
        for s in seconds:
            assert "train" not in s["visible"]
            heard_or_seen = set(s["visible"]) | set(s["audible"])
            assert s["anomaly"] == any(c in ANOMALY_CLASSES for c in heard_or_seen)
            assert {by_id[i]["class"] for i in s["event_ids"]} == heard_or_seen
    train = next(e for e in schedule_events(SceneConfig(seed=0, duration_s=600)) if e.cls == "train")
    assert screen_box(train, make_cameras(SCENE)[0], 320, 180, np.array([0.0])) is None


def _band_energy(samples: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Energy per second in the band [lo, hi] Hz, left and right summed."""
    seconds = samples[:, : 30 * 48_000].reshape(2, 30, 48_000).sum(axis=0)
    spectrum = np.abs(np.fft.rfft(seconds, axis=1)) ** 2
    freqs = np.fft.rfftfreq(48_000, 1 / 48_000)
    return spectrum[:, (freqs >= lo) & (freqs <= hi)].sum(axis=1)


def test_audible_siren_seconds_carry_siren_band_energy(
    scene: tuple[Path, dict[str, Any]], media: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    _, truth = scene
    energy = _band_energy(media["cam0"][1], 500, 1800)
    siren = np.array([bool({"police", "ambulance"} & set(s["audible"])) for s in truth["seconds"]["cam0"]])
    assert siren.any() and (~siren).any()
    assert np.median(energy[siren]) > 5 * np.median(energy[~siren])


def test_siren_heard_before_it_is_seen(scene: tuple[Path, dict[str, Any]]) -> None:
    _, truth = scene
    sirens = [e for e in truth["events"] if e["class"] in ("police", "ambulance")]
    seconds = truth["seconds"]["cam0"]
    for siren in sirens:
        mine = [s for s in seconds if siren["event_id"] in s["event_ids"]]
        heard = [s["t"] for s in mine if siren["class"] in s["audible"]]
        seen = [s["t"] for s in mine if siren["class"] in s["visible"]]
        if heard and seen and heard[0] < seen[0] - 3:
            return
    pytest.fail("no siren was audible several seconds before it became visible")


def test_visible_seconds_show_objects_on_the_background(
    scene: tuple[Path, dict[str, Any]], media: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    _, truth = scene
    seconds = truth["seconds"]["cam0"]
    empty = np.array([not s["event_ids"] for s in seconds])
    visible = np.array([bool(s["visible"]) for s in seconds])
    assert visible.any() and empty.any()
    frames = media["cam0"][0].astype(np.int16)
    # The empty street, as encoded: a frame of a second with no event at all.
    street = frames[int(np.flatnonzero(empty)[0]) * 25]
    changed = np.array([(np.abs(frames[t * 25 : (t + 1) * 25] - street).max(axis=3) > 30).mean()
                        for t in range(30)])
    assert changed[empty].max() < 0.0002
    assert changed[visible].min() > 0.0005
    assert changed[visible].mean() > 0.005


def test_challenging_camera_is_mirrored_and_further_from_reference(
    media: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    ref, similar, challenging = (media[c][0][::25].astype(np.int16) for c in ("cam0", "cam1", "cam2"))
    assert np.abs(ref - similar).mean() * 1.5 < np.abs(ref - challenging).mean()
    events = [e for e in schedule_events(SCENE) if e.cls == "car"]
    rigs = make_cameras(SCENE)
    times = np.array([events[0].start_s, events[0].start_s + 1.0])
    motion = [np.diff(screen_box(events[0], rig, 320, 180, times).x0)[0] for rig in (rigs[0], rigs[2])]
    assert motion[0] * motion[1] < 0


def test_night_is_darker_than_day() -> None:
    config = SceneConfig(seed=1, width=160, height=96, lighting="cycle")
    rig = make_cameras(config)[0]
    background = Background(rig, config)
    assert background.at(0).mean() < 0.5 * background.at(8).mean()


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avsurv")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_help_mentions_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli().parse_args(["synth", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--seed", "--duration", "--cameras", "--fps", "--width", "--height", "--lighting",
                   "--weather", "--anomalies-per-10min", "--traffic", "--jobs", "--no-progress"):
        assert option in text
    assert "default" in text


def test_cli_bad_value_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli().parse_args(["synth", "--out", str(tmp_path), "--fps", "24"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("avsurv synth: error: invalid --fps") and err.count("\n") == 1


def test_cli_renders_with_parallel_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--out", str(tmp_path), "--duration", "5", "--cameras", "2", "--width", "128",
            "--height", "72", "--jobs", "2", "--no-progress"]
    args = _cli().parse_args(argv)
    assert args.func(args) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"cam0.mp4", "cam1.mp4", "ground_truth.json"}
    assert "x real time" in capsys.readouterr().out
