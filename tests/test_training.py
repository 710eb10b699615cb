"""Training: schedule, batches, caching, reproducibility, resume, the model directory, and embedding."""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from avsurv.cli import main
from avsurv.constants import DEFAULT_PROFILE
from avsurv.errors import ModelError
from avsurv.learning.data import CROPS, ClipTable, audio_batch, load_clips, mel_statistics, video_batch
from avsurv.learning.distance import distance
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.evaluate import cross_modal_recall
from avsurv.learning.modeldir import CAMERA_STATS, MODEL_FORMAT, load_model, save_checkpoint, save_model, sha256_of
from avsurv.learning.normalization import SiteNormalization
from avsurv.learning.train import EpochStats, TrainConfig, Trainer, _Objective, train
from avsurv.models import build_model
from avsurv.models.inputs import crops
from avsurv.models.profiles import PROFILES
from avsurv.synth import SceneConfig, generate_scene

DEFAULT_INPUT = PROFILES[DEFAULT_PROFILE].input
"""What the default profile's trainer expects its clip tables to hold."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    generate_scene(SceneConfig(seed=3, duration_s=24, cameras=2, width=320, height=180, weather="clear"), out,
                   progress=False)
    return out


@pytest.fixture(scope="module")
def table(scene) -> ClipTable:
    return load_clips([scene / "cam0.mp4"], progress=False, visual=DEFAULT_INPUT)


def quiet(_: str) -> None:
    pass


def test_config_rejects_bad_settings():
    for bad, words in (({"method": "simclr"}, "method"), ({"epochs": 0}, "epochs"), ({"batch_size": 1}, "batch"),
                       ({"schedule": "random"}, "schedule"), ({"views_weight": -1.0}, "views weight")):
        with pytest.raises(ValueError, match=words):
            TrainConfig(**bad)


def test_layerwise_schedule_trains_audio_first_then_alternates():
    assert TrainConfig().resolved_schedule == "joint"  # from scratch
    assert TrainConfig(kinetics_weights="x3d_m.pyth").resolved_schedule == "layerwise"
    config = TrainConfig(schedule="layerwise", audio_epochs=1)
    assert [config.trained_modalities(e) for e in range(5)] == [
        ("audio",), ("visual",), ("audio",), ("visual",), ("audio",)]
    assert TrainConfig(schedule="joint").trained_modalities(0) == ("visual", "audio")


def test_video_batch_crops_match_the_clip_tensor(scene):
    table = load_clips([scene / "cam0.mp4"], progress=False, visual=CROPS)
    chosen = np.array([0, 1, 1])
    batch = video_batch(table, np.arange(3), chosen, CROPS)
    for row, crop in enumerate(chosen):
        assert torch.equal(batch[row], crops(table.frames[row])[crop])


def test_mel_statistics_are_per_bin(table):
    mean, std = mel_statistics(table.log_mel)
    assert mean.shape == std.shape == (128,)
    np.testing.assert_allclose(mean[5].item(), table.log_mel[:, 0, 5, :].mean(), rtol=1e-4)


def test_an_epoch_shows_every_crop_once_across_the_stream_without_repeating_audio_in_a_batch(table):
    trainer = Trainer(table, Path("/nonexistent"), TrainConfig(batch_size=8), progress=False, log=quiet)
    passes = trainer._crop_passes(epoch=0)
    seen = sorted((int(clip), int(crop)) for batch, crops in passes for clip, crop in zip(batch, crops, strict=True))
    assert seen == [(clip, crop) for clip in range(len(table)) for crop in (0, 1)]
    assert all(len(set(batch)) == len(batch) for batch, _ in passes)  # never the same audio twice
    assert np.ptp(table.starts[passes[0][0]]) > 8  # drawn across the stream, not consecutive seconds
    assert not np.array_equal(passes[0][0], trainer._crop_passes(epoch=1)[0][0])  # reshuffled every epoch


def test_avbt_batches_are_whole_windows_of_consecutive_clips(table):
    trainer = Trainer(table, Path("/nonexistent"), TrainConfig(method="avbt", batch_size=8, avbt_window=4),
                      progress=False, log=quiet)
    for batch in trainer._batches(np.random.default_rng(0)):
        for window in batch.reshape(-1, 4):
            assert np.all(np.diff(table.starts[window]) == 1.0)


def test_cached_frozen_outputs_give_the_same_epoch_as_recomputing(table):
    results = []
    for cache in (True, False):
        config = TrainConfig(schedule="layerwise", batch_size=8, epochs=1, cache_frozen=cache)
        trainer = Trainer(table, Path("/nonexistent"), config, progress=False, log=quiet)
        results.append(trainer.run_epoch(0))
    assert results[0].loss == pytest.approx(results[1].loss, rel=1e-4)
    assert results[0].trained == ["audio"]


def test_the_views_term_trains_the_audio_encoder_and_leaves_the_method_alone_when_off(table):
    def epoch(weight: float, schedule: str = "joint") -> tuple[EpochStats, Trainer]:
        config = TrainConfig(method="tpg", batch_size=8, epochs=1, views_weight=weight, schedule=schedule)
        trainer = Trainer(table, Path("/nonexistent"), config, progress=False, log=quiet)
        return trainer.run_epoch(0), trainer

    (off, _), (again, _) = epoch(0.0), epoch(0.0)
    (on, trainer), (doubled, _) = epoch(1.0), epoch(2.0)
    assert off.views_loss == 0.0 and "views loss" not in off.line()
    assert on.views_loss > 0 and "views loss" in on.line()
    assert off.loss == pytest.approx(again.loss, rel=1e-6)  # the views' random numbers leave the batches alone
    # The loss includes weight x the views term (near log(2B - 1) = 2.7 at first, well above TPG's).
    assert on.loss > off.loss + 0.5 * on.views_loss and doubled.loss > on.loss
    assert trainer.views_rng.initial_seed() == 0  # seed 0, epoch 0
    # Layer-wise: the first epoch trains the audio encoder (views term on), the second only the visual one.
    audio_first, trainer = epoch(1.0, schedule="layerwise")
    assert audio_first.trained == ["audio"] and audio_first.views_loss > 0
    visual = trainer.run_epoch(1)
    assert visual.trained == ["visual"] and visual.views_loss == 0.0


def test_training_is_reproducible(scene, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, seed=5)
    first = train([scene / "cam0.mp4"], tmp_path / "a", config, progress=False, log=quiet)
    second = train([scene / "cam0.mp4"], tmp_path / "b", config, progress=False, log=quiet)
    assert first.sha256 == second.sha256
    other_seed = train([scene / "cam0.mp4"], tmp_path / "c", TrainConfig(epochs=2, batch_size=8, seed=6),
                       progress=False, log=quiet)
    assert other_seed.sha256 != first.sha256


def test_resume_needs_a_checkpoint_and_the_same_settings(scene, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train([scene / "cam0.mp4"], tmp_path / "none", TrainConfig(), resume=True, progress=False, log=quiet)
    train([scene / "cam0.mp4"], tmp_path / "m", TrainConfig(epochs=1, batch_size=8), progress=False, log=quiet)
    with pytest.raises(ModelError, match="other settings"):
        train([scene / "cam0.mp4"], tmp_path / "m", TrainConfig(epochs=2, batch_size=8, seed=6), resume=True,
              progress=False, log=quiet)


def test_interrupted_run_resumes_to_the_same_model(scene, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, seed=5)
    straight = train([scene / "cam0.mp4"], tmp_path / "a", config, progress=False, log=quiet)
    table = load_clips([scene / "cam0.mp4"], progress=False, visual=DEFAULT_INPUT)
    interrupted = Trainer(table, tmp_path / "b", config, progress=False, log=quiet)
    history = [interrupted.run_epoch(0)]
    save_checkpoint(tmp_path / "b", interrupted._modules(), interrupted.optimizers,
                    {"epoch": 0, "config": asdict(config), "history": [asdict(h) for h in history]})
    resumed = train([scene / "cam0.mp4"], tmp_path / "b", config, resume=True, progress=False, log=quiet)
    assert resumed.sha256 == straight.sha256


def test_model_directory_is_verified_on_load(scene, tmp_path):
    result = train([scene / "cam0.mp4"], tmp_path / "m", TrainConfig(epochs=1, batch_size=8), progress=False,
                   log=quiet)
    _, config = load_model(tmp_path / "m")
    assert config["profile"] == DEFAULT_PROFILE and config["method"] == "epg" and config["sha256"] == result.sha256
    assert len(config["audio_normalization"]["mel_mean"]) == 128
    assert config["training_data"]["clips"] == 24 and len(config["history"]) == 1
    calibration = json.loads((tmp_path / "m" / "calibration.json").read_text())
    assert calibration["model_sha256"] == result.sha256
    stats = SiteNormalization.load(tmp_path / "m" / CAMERA_STATS)
    assert stats.model_sha256 == result.sha256 and stats.reference.count == 24
    assert {camera: own.count for camera, own in stats.cameras.items()} == {"cam0": 24}
    assert stats.reference.dim == len(stats.cameras["cam0"].mean["audio"])
    assert sha256_of(tmp_path / "m" / "model.safetensors") == result.sha256
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its checksum"):
        load_model(tmp_path / "m")
    with pytest.raises(FileExistsError, match="already holds a model"):
        train([scene / "cam0.mp4"], tmp_path / "m", TrainConfig(epochs=1), progress=False, log=quiet)


def test_a_foreground_model_that_heard_the_raw_log_mel_is_refused(tmp_path):
    for profile, form in (("fg", "avsurv-model-v1"), ("tiny", "avsurv-model-v1"), ("fg", MODEL_FORMAT)):
        save_model(build_model(profile), tmp_path / f"{profile}-{form}",
                   {"format": form, "profile": profile, "method": "tpg", "hyperparameters": {"w": 0.5}})
    with pytest.raises(ModelError, match=r"noise floor\): train it again"):
        load_model(tmp_path / "fg-avsurv-model-v1")
    assert load_model(tmp_path / "tiny-avsurv-model-v1")[1]["profile"] == "tiny"
    assert load_model(tmp_path / f"fg-{MODEL_FORMAT}")[1]["format"] == MODEL_FORMAT


@pytest.mark.parametrize("method", ["tpg", "avbt", "infonce"])
def test_baselines_train_on_the_same_encoders(scene, tmp_path, method):
    config = TrainConfig(method=method, epochs=2, batch_size=8, avbt_window=4)
    result = train([scene / "cam0.mp4"], tmp_path / method, config, progress=False, log=quiet)
    assert [h.labels for h in result.history] == [{"tpg": "TPG", "avbt": "AV-BT", "infonce": "InfoNCE"}[method]] * 2
    assert all(np.isfinite(h.loss) for h in result.history)


def test_supervised_ceiling_trains_on_the_labels(scene, tmp_path, capsys):
    out = tmp_path / "sup"
    code = main(["train", str(scene / "cam0.mp4"), "--out", str(out), "--method", "supervised", "--labels",
                 str(scene / "ground_truth.json"), "--epochs", "2", "--batch-size", "8", "--no-progress"])
    assert code == 0
    _, config = load_model(out)
    truth = json.loads((scene / "ground_truth.json").read_text())
    assert config["classes"] == sorted({s["label"] for s in truth["seconds"]["cam0"]})
    assert [h["labels"] for h in config["history"]] == ["class", "class"]
    history = config["history"]
    assert history[1]["loss"] < history[0]["loss"]  # the encoders learn from the labels
    assert main(["train", str(scene / "cam0.mp4"), "--out", str(tmp_path / "x"), "--method", "supervised"]) == 2
    assert "--labels is needed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only by it"):
        Trainer(load_clips([scene / "cam0.mp4"], progress=False, visual=DEFAULT_INPUT), tmp_path / "y",
                TrainConfig(method="tpg"),
                labels=np.asarray(["car"] * 24))


def test_epg_switches_from_tpg_labels_after_the_first_epoch(scene, tmp_path):
    result = train([scene / "cam0.mp4"], tmp_path / "epg", TrainConfig(epochs=2, batch_size=8), progress=False,
                   log=quiet)
    assert [h.labels for h in result.history] == ["TPG", "EPG"]
    assert result.history[0].positives_per_anchor == 1.0


def test_aligned_switch_waits_for_alignment_and_then_stays_on_epg():
    objective = _Objective(TrainConfig(epg_switch="aligned", tpg_epochs=1, switch_gap=0.5))

    def epoch(index: int, aligned: float, labels: str) -> EpochStats:
        return EpochStats(index, ["visual", "audio"], labels, aligned_distance=aligned, negative_distance=1.0)

    history: list[EpochStats] = []
    assert objective.label_kind(0, history) == "TPG"
    history.append(epoch(0, 0.2, "TPG"))  # aligned already, but tpg_epochs comes first
    assert objective.label_kind(0, history[:0]) == "TPG"
    history[0] = epoch(0, 0.9, "TPG")
    assert objective.label_kind(1, history) == "TPG"  # not aligned: keep temporal labels
    history.append(epoch(1, 0.5, "TPG"))
    assert objective.label_kind(2, history) == "EPG"  # gap reached
    history.append(epoch(2, 0.8, "EPG"))
    assert objective.label_kind(3, history) == "EPG"  # once switched, never back
    paper = _Objective(TrainConfig(tpg_epochs=1))
    assert [paper.label_kind(e, [epoch(0, 0.9, "TPG")]) for e in (0, 1)] == ["TPG", "EPG"]
    with pytest.raises(ValueError, match="epg switch"):
        TrainConfig(epg_switch="later")
    with pytest.raises(ValueError, match="switch gap"):
        TrainConfig(switch_gap=0.0)


def test_embed_command_writes_the_documented_arrays(scene, tmp_path, capsys):
    assert main(["train", str(scene / "cam0.mp4"), "--out", str(tmp_path / "m"), "--epochs", "1",
                 "--batch-size", "8", "--no-progress"]) == 0
    out = tmp_path / "cam1.npz"
    assert main(["embed", str(scene / "cam1.mp4"), "--model", str(tmp_path / "m"), "--out", str(out),
                 "--precision", "fp32", "--no-progress"]) == 0  # compared with a float32 forward below
    embeddings = EmbeddingSet.load(out)
    assert embeddings.clip_start.dtype == np.float64 and embeddings.clip_start.shape == (24,)
    assert embeddings.z_v.shape == embeddings.z_a.shape == (24, 512) and embeddings.z_v.dtype == np.float32
    assert set(embeddings.camera_id) == {"cam1"} and embeddings.model_sha256 == load_model(tmp_path / "m")[1]["sha256"]
    model, _ = load_model(tmp_path / "m")
    clip = load_clips([scene / "cam1.mp4"], progress=False, visual=model.visual_input)
    views = torch.cat([video_batch(clip, np.array([0]), np.array([view]), model.visual_input) for view in (0, 1)])
    with torch.no_grad():
        both = model.encoders["visual"].eval()(views)["visual"]
    np.testing.assert_allclose(embeddings.z_v[0], both.mean(0).numpy(), atol=1e-5)  # mean over the two views


def test_cross_modal_recall_matches_a_loop():
    rng = np.random.default_rng(0)
    z_v = rng.normal(size=(120, 16)).astype(np.float32)
    z_a = (z_v + rng.normal(scale=1.5, size=z_v.shape)).astype(np.float32)
    result = cross_modal_recall(z_v, z_a, candidates=10, ks=(1, 3), seed=4)
    draw = np.random.default_rng(4)
    others = draw.random((120, 119)).argsort(axis=1)[:, :9]
    hits = {1: 0, 3: 0}
    for i in range(120):
        pool = [i] + [o + (o >= i) for o in others[i]]
        scores = [distance(torch.from_numpy(z_v[i]), torch.from_numpy(z_a[j])).item() for j in pool]
        rank = sum(s < scores[0] for s in scores)
        hits[1] += rank < 1
        hits[3] += rank < 3
    assert result["recall_at_1"] == pytest.approx(hits[1] / 120)
    assert result["recall_at_3"] == pytest.approx(hits[3] / 120)
    assert 0.1 < result["recall_at_1"] < 1.0  # the planted signal is found, not perfectly


@pytest.mark.parametrize("precise_bn_clips", [0, 1024])
def test_precise_batch_norm_makes_eval_mode_match_training_statistics(table, precise_bn_clips):
    config = TrainConfig(batch_size=len(table), epochs=1, precise_bn_clips=precise_bn_clips)  # one batch
    trainer = Trainer(table, Path("/nonexistent"), config, progress=False, log=quiet)
    trainer.run_epoch(0)
    audio = trainer.model.encoders["audio"]
    log_mel = audio_batch(table.log_mel)
    with torch.no_grad():
        evaluated = audio.eval()(log_mel)["audio"]
        with_batch_statistics = audio.train()(log_mel)["audio"]
    relative = ((evaluated - with_batch_statistics).norm() / with_batch_statistics.norm()).item()
    # Momentum estimates lag the weights (measured ~1.0 apart); recomputed ones differ only by the
    # unbiased-vs-biased variance of 24 clips (~0.03).
    assert (relative < 0.06) if precise_bn_clips else (relative > 0.3)
