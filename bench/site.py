"""Site-scale benchmark (issue 12): does what the platform learns on one camera serve an operator?

    python bench/site.py [--quick] [--out results/site] [--seeds 0 1 2] [--methods ...] [--budget-s 600]
                         [--precision fp32] [--views-weight 0] [--scene-seed 31] [--duration-s 3600] [--held-s 900]

One generated intersection (``--duration-s`` 3600 s, 3 cameras: cam0 reference, cam1 similar, cam2
challenging; ``--scene-seed`` 31, 32 is the validation scene of docs/RESULTS.md) is rendered and cut into clips
once; a kept scene of another seed or length is refused (use another ``--out``). Every method learns on cam0
except its last ``--held-s`` (900 s) for at most ``--budget-s`` seconds of wall time (whole epochs: the epoch that would
pass the budget is not started, judged by the last epoch's length), in ``--precision`` (float32 by default, as
the tables in docs/RESULTS.md were made; ``auto`` is what the platform trains in, bf16 on a CPU with Intel AMX,
which fits about twice the epochs in the budget), with the audio encoder's views term at ``--views-weight``
(0 by default, as the main tables were made; the platform's trainer adds it, ``train_views_weight``), and is
evaluated on the held-back last ``--held-s`` of every camera (embedded in the same precision):
- event localization, EPG Table 1 protocol: a linear probe fitted on cam0's training part, accuracy and
  macro-F1 of visual features on ``visual_label``, audio on ``audio_label``, audio-visual on ``label``;
  under the paper's normalization (cam0's scaler for every camera) and per camera (each camera's
  embeddings standardized with their own mean and std, no labels) side by side;
- anomaly detection per camera: ROC-AUC and average precision of the paper's d(z_v, z_a) (Eq. 5, the
  platform's ``anomaly_detector: eq5``), of site novelty (``avsurv.tasks.novelty.site_novelty``, the
  platform's default), of site novelty on the audio embedding alone and on it with the clip's log-mel band
  means (``feature_novelty``; candidates, not in the platform) and of the trivial embedding-size activity
  score (docs/METHOD.md: random encoders' embeddings grow with activity);
- event search on each camera's held-back part: P@1, P@5, mAP (relevant: same ``label``), audio-visual;
- cross-modal retrieval on cam0's held-back clips: R@1, R@5 among 100.
Baselines in the same run: the most frequent class of cam0's training part, the randomly initialised
encoders (``random``), the same encoders trained with ``visual_label`` (``supervised``, the ceiling),
hand-made features (``hand``, no model: the visual probe on a grid of background distances and the
colour of what changed; as anomaly detectors, site novelty on those and on each clip's log-mel band means,
``sound``, as the profile hears them: ``fg``, minus each camera's noise floor; search on the two together)
and perfect perception
(``truth``, no model: each second's ground-truth visible and audible classes as its embeddings, for the
anomaly detectors and search, and how rarely the rarest class a second holds came before; what any encoder
could give the platform's detector and search at best). Each run's figures are kept in ``OUT/runs/``; a rerun
skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avsurv.constants import DEFAULT_PROFILE, NOVELTY_EXCLUSION_S, PRECISIONS
from avsurv.learning.data import ClipTable, load_clips, mel_statistics
from avsurv.learning.embed import embed_table, table_embeddings
from avsurv.learning.embeddings import EmbeddingSet
from avsurv.learning.encode import encode_table
from avsurv.learning.evaluate import cross_modal_recall
from avsurv.learning.losses import epg_labels
from avsurv.learning.normalization import standardized
from avsurv.learning.scores import clip_scores
from avsurv.learning.train import METHODS, SUPERVISED, TrainConfig, Trainer
from avsurv.models import AudioVisualModel, build_model
from avsurv.models.device import resolve_precision
from avsurv.models.profiles import PROFILES
from avsurv.tasks.metrics import average_precision, precision_at_k, roc_auc
from avsurv.tasks.novelty import feature_novelty, site_novelty
from avsurv.tasks.probe import train_probe
from avsurv.tasks.search import search_by_clip

CAMERAS = ("cam0", "cam1", "cam2")
VIEWPOINTS = {"cam0": "reference", "cam1": "similar", "cam2": "challenging"}
FIELDS = {"visual": "visual_label", "audio": "audio_label", "av": "label"}
BASELINES = ("random", SUPERVISED, "hand", "truth")
DETECTORS = ("av", "novelty", "novelty-audio", "novelty-audio+sound", "size")
HAND_DETECTORS = ("novelty", "sound")
TRUTH_DETECTORS = ("novelty", "class-rarity")
TIE_NOISE = 1e-3
"""Noise added to the ground-truth class features (``truth``): many seconds share one set of classes, and a
median of exact zero distances would leave site novelty's terms undefined and search's order arbitrary."""
NORMALIZATIONS = ("paper", "per-camera")
BACKGROUND = "background"
SEARCH_WINDOW_S = 60.0
LABEL_SAMPLE = 512
"""Training clips on which EPG's pair labels are checked after each epoch."""


@dataclass(frozen=True)
class Settings:
    duration_s: int = 3600
    held_s: int = 900
    scene_seed: int = 31
    anomalies_per_10min: float = 6.0
    profile: str = DEFAULT_PROFILE
    budget_s: float = 600.0
    precision: str = "fp32"
    views_weight: float = 0.0
    """TrainConfig.views_weight of the trained methods: the audio encoder's own views term (0: off, as the paper)."""
    max_epochs: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("random", "hand", "truth", "tpg", "epg", SUPERVISED, "infonce", "avbt")
    """In the order they run (each seed in turn), so that an interrupted benchmark has the main rows first."""
    seeded: tuple[str, ...] = ("epg", "tpg")
    """Methods run on every seed; the others on the first only."""
    queries_per_class: int = 10
    history_stride: int = 6
    """Of the seconds before the held-back part, every n-th is embedded (probe fitting, novelty history):
    embedding all 10,800 clips of every run would take longer than training it on 2 cores."""


QUICK = Settings(duration_s=150, held_s=50, anomalies_per_10min=30.0, budget_s=20.0, max_epochs=2, seeds=(0,),
                 methods=("random", "hand", "truth", "tpg", "epg"), queries_per_class=3, history_stride=1)


# -- scene ---------------------------------------------------------------------------------------
def make_scene(settings: Settings, root: Path, log: Any) -> Path:
    """Renders and segments the scene once; returns its directory (``clips/camN`` inside)."""
    scene = root / "scene"
    truth = scene / "ground_truth.json"
    if truth.is_file():
        _check_scene(json.loads(truth.read_text()), settings, scene)
    else:
        log(f"rendering a {settings.duration_s} s, 3-camera scene into {scene} (one camera at a time: memory)")
        # --force: an interrupted render leaves videos but no ground truth; start that render again
        _avsurv("synth", "--out", scene, "--force", "--duration", settings.duration_s, "--cameras", len(CAMERAS),
                "--jobs", 1, "--seed", settings.scene_seed, "--anomalies-per-10min", settings.anomalies_per_10min,
                "--no-progress")
    for camera in CAMERAS:
        if not (scene / "clips" / camera / "clips.jsonl").is_file():
            log(f"segmenting {camera}")
            _avsurv("segment", scene / f"{camera}.mp4", "--out", scene / "clips" / camera, "--no-progress")
    return scene


def _check_scene(truth: dict[str, Any], settings: Settings, scene: Path) -> None:
    """Refuses a kept scene rendered with another seed or length: runs on it would be mislabelled."""
    found = (truth.get("seed"), float(truth.get("duration_s", -1)))
    if found != (settings.scene_seed, float(settings.duration_s)):
        raise SystemExit(f"{scene} holds a scene of seed {found[0]} and {found[1]:g} s, not the asked seed "
                         f"{settings.scene_seed} and {settings.duration_s} s: use another --out")


def _avsurv(*args: Any) -> None:
    subprocess.run([sys.executable, "-m", "avsurv.cli", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


@dataclass
class Camera:
    table: ClipTable  # the evaluated clips: the held-back part and every history_stride-th second before it
    labels: dict[str, np.ndarray]  # field -> str [N]
    anomaly: np.ndarray  # bool [N]
    held: np.ndarray  # bool [N]: the held-back last part
    visible: np.ndarray  # bool [N, classes]: the classes seen in each clip's second (ground truth)
    audible: np.ndarray  # bool [N, classes]: the classes heard


@dataclass
class Training:
    table: ClipTable  # cam0's whole training part: what every method learns on
    visual_labels: np.ndarray  # str [N]: the supervised ceiling's targets
    audio_labels: np.ndarray  # str [N]: with visual_labels, what EPG's pair labels are checked against


def load_cameras(scene: Path, settings: Settings) -> tuple[dict[str, Camera], Training]:
    """The evaluated clips of each camera, and cam0's training part."""
    truth = json.loads((scene / "ground_truth.json").read_text())
    cameras, training = {}, None
    for camera in CAMERAS:
        table = load_clips([scene / "clips" / camera], progress=False, visual=PROFILES[settings.profile].input)
        seconds = {entry["t"]: entry for entry in truth["seconds"][camera]}
        rows = [seconds[int(t)] for t in np.floor(table.starts + 1e-6)]
        held = table.starts >= table.starts.max() + 1 - settings.held_s
        if camera == CAMERAS[0]:
            visual, audio = (np.array([row[field] for row in rows]) for field in ("visual_label", "audio_label"))
            training = Training(table.subset(~held), visual[~held], audio[~held])
        keep = held | (np.arange(len(table)) % settings.history_stride == 0)
        rows = [row for row, k in zip(rows, keep, strict=True) if k]
        labels = {field: np.array([row[field] for row in rows]) for field in set(FIELDS.values())}
        visible, audible = (np.array([[name in row[kind] for name in truth["classes"]] for row in rows], bool)
                            for kind in ("visible", "audible"))
        cameras[camera] = Camera(table.subset(keep), labels, np.array([row["anomaly"] for row in rows]), held[keep],
                                 visible, audible)
    assert training is not None
    return cameras, training


# -- features ------------------------------------------------------------------------------------
def label_precision(model: AudioVisualModel, train: Training, config: TrainConfig) -> dict[str, float]:
    """EPG's pair labels (Eq. 1, the run's settings) on a fixed sample of ``LABEL_SAMPLE`` training clips in
    batches of the training batch size: extra positives per anchor, the share of them whose visible /
    audible class (``visual_label`` / ``audio_label``) is the anchor's, and that share among all pairs of a
    batch (the base rate). Embeddings are the eval-mode ones after the epoch; training sees train-mode
    ones, so this approximates the labels of the epoch that follows."""
    rows = np.random.default_rng(config.seed).permutation(len(train.table))[:LABEL_SAMPLE]
    z_v, z_a = encode_table(model, train.table.subset(rows))
    counts = dict.fromkeys(("extra", "pairs", "visual", "audio", "visual_base", "audio_base"), 0)
    for start in range(0, len(rows), config.batch_size):
        batch = slice(start, start + config.batch_size)
        labels = epg_labels(torch.from_numpy(z_v[batch]), torch.from_numpy(z_a[batch]),
                            torch.from_numpy(train.table.times[rows[batch]]), w=config.w, sigma=config.sigma,
                            rule=config.label_rule, max_positives=config.max_positives).numpy()
        others = ~np.eye(len(labels), dtype=bool)
        for key, classes in (("visual", train.visual_labels), ("audio", train.audio_labels)):
            same = classes[rows[batch]][:, None] == classes[rows[batch]][None, :]
            counts[key] += int((same & labels & others).sum())
            counts[f"{key}_base"] += int((same & others).sum())
        counts["extra"] += int((labels & others).sum())
        counts["pairs"] += int(others.sum())
    extra = max(counts["extra"], 1)
    return {"extra_positives_per_anchor": counts["extra"] / len(rows),
            "visual_precision": counts["visual"] / extra, "audio_precision": counts["audio"] / extra,
            "visual_base_rate": counts["visual_base"] / counts["pairs"],
            "audio_base_rate": counts["audio_base"] / counts["pairs"]}


def train_model(method: str, seed: int, train: Training, settings: Settings, log: Any) -> tuple[AudioVisualModel, dict]:
    """Trains on cam0's training part within the wall-time budget (the supervised ceiling on its
    visual_label); ``random`` is the untrained model. EPG runs also record their pair labels' precision
    after every epoch (:func:`label_precision`)."""
    table = train.table
    if method == "random":
        torch.manual_seed(seed)
        model = build_model(settings.profile)
        model.encoders["audio"].set_normalization(*mel_statistics(table.log_mel))
        return model.eval(), {"epochs": 0, "seconds": 0.0, "history": []}
    config = TrainConfig(profile=settings.profile, method=method, epochs=settings.max_epochs, seed=seed,
                         precision=settings.precision, views_weight=settings.views_weight)
    trainer = Trainer(table, Path("unused"), config, progress=False, log=log,
                      labels=train.visual_labels if method == SUPERVISED else None)
    started, epoch, precision, spent = time.perf_counter(), 0, [], 0.0
    while epoch < settings.max_epochs:
        stats = trainer.run_epoch(epoch)
        trainer.history.append(stats)
        log(f"  {method} seed {seed}: {stats.line()}")
        epoch += 1
        if method == "epg":
            measuring = time.perf_counter()
            precision.append({"after_epoch": epoch, **label_precision(trainer.model, train, config)})
            trainer.model.train()
            spent += time.perf_counter() - measuring  # not training: left out of the budget
            log(f"  {method} seed {seed}: pair labels after epoch {epoch}: {precision[-1]}")
        if time.perf_counter() - started - spent + stats.seconds > settings.budget_s:
            break
    return trainer.model.eval(), {"epochs": epoch, "seconds": time.perf_counter() - started - spent,
                                  "history": [asdict(h) for h in trainer.history], "label_precision": precision}


def hand_features(table: ClipTable) -> np.ndarray:
    """float32 [N, 64]: per clip, the mean absolute difference from the background over a 6x10 grid, the
    share of changed pixels and their mean colour (PAPER_NOTES' hand-made baseline)."""
    frames = table.frames.astype(np.float32) / 255.0  # [N, T, H, W, 3]
    difference = np.abs(frames - table.background[:, None].astype(np.float32) / 255.0).mean(axis=-1)
    n, _, height, width = difference.shape
    cropped = difference[:, :, : height // 6 * 6, : width // 10 * 10]
    grid = cropped.reshape(n, -1, 6, height // 6, 10, width // 10).mean(axis=(1, 3, 5)).reshape(n, -1)
    changed = (difference > 0.1)[..., None]
    share = changed.mean(axis=(1, 2, 3, 4))[:, None]
    colour = (frames * changed).sum(axis=(1, 2, 3)) / np.maximum(changed.sum(axis=(1, 2, 3)), 1)
    return np.concatenate([grid, share, colour], axis=1).astype(np.float32)


# -- evaluation ------------------------------------------------------------------------------------
def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    scores = []
    for label in np.unique(truth):
        tp = float(((predicted == label) & (truth == label)).sum())
        precision = tp / max((predicted == label).sum(), 1)
        recall = tp / max((truth == label).sum(), 1)
        scores.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores))


def localization(features: dict[str, dict[str, np.ndarray]], cameras: dict[str, Camera]) -> dict[str, Any]:
    """kind -> normalization -> camera -> accuracy and macro-F1; ``features``: kind -> camera -> [N, F]."""
    result: dict[str, Any] = {}
    for kind, per_camera in features.items():
        field = FIELDS[kind]
        result[kind] = {}
        for normalization in NORMALIZATIONS:
            prepared = {c: standardized(x) if normalization == "per-camera" else x for c, x in per_camera.items()}
            train = cameras["cam0"]
            probe = train_probe(prepared["cam0"][~train.held], train.labels[field][~train.held])
            scores = {}
            for camera, data in cameras.items():
                truth = data.labels[field][data.held]
                predicted = probe.predict(prepared[camera][data.held])
                scores[camera] = {"accuracy": float((predicted == truth).mean()),
                                  "macro_f1": macro_f1(truth, predicted)}
            result[kind][normalization] = scores
    return result


def majority(cameras: dict[str, Camera]) -> dict[str, Any]:
    """field -> camera -> accuracy of always predicting cam0's most frequent training class."""
    train, result = cameras["cam0"], {}
    for kind, field in FIELDS.items():
        values, counts = np.unique(train.labels[field][~train.held], return_counts=True)
        top = values[counts.argmax()]
        result[kind] = {c: {"accuracy": float((d.labels[field][d.held] == top).mean()),
                            "macro_f1": macro_f1(d.labels[field][d.held], np.full(d.held.sum(), top))}
                        for c, d in cameras.items()}
    return result


def anomalies(sets: dict[str, EmbeddingSet], cameras: dict[str, Camera]) -> dict[str, Any]:
    """camera -> detector -> ROC-AUC and AP on the held-back clips with audio (history: the camera's
    earlier clips)."""
    return {camera: detection({
        "av": clip_scores(embeddings.z_v, embeddings.z_a),
        "novelty": site_novelty(embeddings.z_v, embeddings.z_a, embeddings.clip_start),
        "novelty-audio": feature_novelty([embeddings.z_a], embeddings.clip_start),
        "novelty-audio+sound": feature_novelty([embeddings.z_a, sound(cameras[camera].table)], embeddings.clip_start),
        "size": np.linalg.norm(embeddings.z_v, axis=1) + np.linalg.norm(embeddings.z_a, axis=1),
    }, cameras[camera]) for camera, embeddings in sets.items()}


def hand_anomalies(cameras: dict[str, Camera], visual: dict[str, np.ndarray]) -> dict[str, Any]:
    """camera -> detector -> ROC-AUC and AP of site novelty on hand-made features, no model: ``novelty`` on
    the visual ones (``visual``: camera -> :func:`hand_features`), ``sound`` on each clip's log-mel band means
    (its spectrum, as the profile hears it)."""
    result = {}
    for camera, data in cameras.items():
        starts = data.table.starts
        result[camera] = detection({"novelty": feature_novelty([visual[camera]], starts),
                                    "sound": feature_novelty([sound(data.table)], starts)}, data)
    return result


def hand_sets(cameras: dict[str, Camera], visual: dict[str, np.ndarray]) -> dict[str, EmbeddingSet]:
    """camera -> the hand-made features as embeddings, for search: z_v the visual ones (``visual``: camera ->
    :func:`hand_features`), z_a the band means (:func:`sound`), each standardized over the camera's clips and
    divided by the square root of its width so that both weigh alike, the narrower padded with zeros (which
    changes no distance of Eq. 5)."""
    sets = {}
    for camera, data in cameras.items():
        z_v, z_a = (standardized(x) / np.sqrt(x.shape[1]) for x in (visual[camera], sound(data.table)))
        width = max(z_v.shape[1], z_a.shape[1])
        sets[camera] = table_embeddings(data.table, *(np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in (z_v, z_a)))
    return sets


def truth_sets(cameras: dict[str, Camera]) -> dict[str, EmbeddingSet]:
    """camera -> perfect perception as embeddings, no model: z_v and z_a are each second's ground-truth visible and
    audible classes (multi-hot, ties broken by noise of ``TIE_NOISE``), the best any representation of a whole
    second could give the platform's detector and search."""
    rng, sets = np.random.default_rng(0), {}
    for camera, data in cameras.items():
        z_v, z_a = (x + TIE_NOISE * rng.standard_normal(x.shape) for x in (data.visible * 1.0, data.audible * 1.0))
        sets[camera] = table_embeddings(data.table, z_v, z_a)
    return sets


def truth_anomalies(sets: dict[str, EmbeddingSet], cameras: dict[str, Camera]) -> dict[str, Any]:
    """camera -> detector -> ROC-AUC and AP with perfect perception (:func:`truth_sets`): ``novelty``, the
    platform's detector on it; ``class-rarity`` (:func:`class_rarity`), which needs each class apart, as a head
    that names classes would."""
    return {camera: detection({"novelty": site_novelty(embeddings.z_v, embeddings.z_a, embeddings.clip_start),
                               "class-rarity": class_rarity(cameras[camera].visible | cameras[camera].audible,
                                                            embeddings.clip_start)}, cameras[camera])
            for camera, embeddings in sets.items()}


def class_rarity(present: np.ndarray, times: np.ndarray, exclusion_s: float = NOVELTY_EXCLUSION_S) -> np.ndarray:
    """float64 [N]: for clips holding the classes ``present`` (bool [N, C]) at ``times`` [N], minus the number of
    clips at least ``exclusion_s`` earlier that hold the rarest class clip i holds,
    ``-min_{c in i} #{j : t_j <= t_i - exclusion_s, c in j}``; -inf for a clip that holds no class."""
    earlier = (times[None, :] <= times[:, None] - exclusion_s).astype(np.float64)
    counts = earlier @ present.astype(np.float64)  # [N, C]: earlier clips holding each class
    return -np.where(present, counts, np.inf).min(axis=1)


def sound(table: ClipTable) -> np.ndarray:
    """float32 [N, mels]: each clip's log-mel band means, its spectrum as the profile hears it."""
    return table.log_mel[:, 0].mean(axis=2)


def detection(scores: dict[str, np.ndarray], data: Camera) -> dict[str, Any]:
    """detector -> ROC-AUC and AP of its ``scores`` [N] on the camera's held-back clips with audio."""
    keep = data.held & data.table.has_audio
    positive = data.anomaly[keep]
    return {name: {"roc_auc": roc_auc(score[keep], positive),
                   "ap": average_precision(positive[np.argsort(-score[keep], kind="stable")]),
                   "anomalous": int(positive.sum()), "clips": int(keep.sum())} for name, score in scores.items()}


def event_search(sets: dict[str, EmbeddingSet], cameras: dict[str, Camera], settings: Settings,
                 seed: int) -> dict[str, Any]:
    """camera -> P@1, P@5, mAP of audio-visual search within the camera's held-back part."""
    result = {}
    for camera, embeddings in sets.items():
        data = cameras[camera]
        rows = np.flatnonzero(data.held & embeddings.has_audio)
        held = _rows(embeddings, rows)
        labels = data.labels["label"][rows]
        p1, p5, ap = [], [], []
        for query in _queries(held.clip_start, labels, settings, seed):
            ranked = search_by_clip(held, held, int(query), mode="av", top_k=len(labels),
                                    exclusion_s=SEARCH_WINDOW_S, separation_s=SEARCH_WINDOW_S)
            relevant = np.array([labels[r.row] == labels[query] for r in ranked], dtype=bool)
            p1.append(precision_at_k(relevant, 1))
            p5.append(precision_at_k(relevant, 5))
            ap.append(average_precision(relevant) if relevant.any() else 0.0)
        result[camera] = {"p_at_1": float(np.mean(p1)) if p1 else float("nan"),
                          "p_at_5": float(np.mean(p5)) if p5 else float("nan"),
                          "map": float(np.mean(ap)) if ap else float("nan"), "queries": len(p1)}
    return result


def _queries(starts: np.ndarray, labels: np.ndarray, settings: Settings, seed: int) -> list[int]:
    """Up to ``queries_per_class`` clips of each event class that recurs outside the exclusion window."""
    rng, rows = np.random.default_rng(seed), []
    for label in sorted(set(labels.tolist()) - {BACKGROUND}):
        same = np.flatnonzero(labels == label)
        recurring = same[(np.abs(starts[same][:, None] - starts[same][None, :]) > SEARCH_WINDOW_S).any(axis=1)]
        rows += rng.permutation(recurring)[: settings.queries_per_class].tolist()
    return sorted(rows)


def _rows(embeddings: EmbeddingSet, rows: np.ndarray) -> EmbeddingSet:
    return EmbeddingSet(**{name: value[rows] if isinstance(value, np.ndarray) else value
                           for name, value in vars(embeddings).items()})


def evaluate(model: AudioVisualModel, cameras: dict[str, Camera], settings: Settings, seed: int,
             method: str) -> dict[str, Any]:
    config = {"sha256": method, "profile": settings.profile, "method": method}
    bf16 = resolve_precision(settings.precision, torch.device("cpu"), settings.profile)
    sets = {camera: embed_table(model, config, data.table, bf16=bf16) for camera, data in cameras.items()}
    features = {"visual": {c: s.z_v for c, s in sets.items()}, "audio": {c: s.z_a for c, s in sets.items()},
                "av": {c: np.concatenate([s.z_v, s.z_a], axis=1) for c, s in sets.items()}}
    held = sets["cam0"].z_v[cameras["cam0"].held], sets["cam0"].z_a[cameras["cam0"].held]
    return {"localization": localization(features, cameras), "anomalies": anomalies(sets, cameras),
            "search": event_search(sets, cameras, settings, seed),
            "retrieval": cross_modal_recall(*held, candidates=min(100, len(held[0])), seed=seed)}


def run_one(method: str, seed: int, cameras: dict[str, Camera], train: Training, settings: Settings,
            log: Any) -> dict[str, Any]:
    if method == "hand":
        visual = {c: hand_features(d.table) for c, d in cameras.items()}
        return {"method": method, "seed": seed, "localization": localization({"visual": visual}, cameras),
                "anomalies": hand_anomalies(cameras, visual),
                "search": event_search(hand_sets(cameras, visual), cameras, settings, seed)}
    if method == "truth":
        sets = truth_sets(cameras)
        return {"method": method, "seed": seed, "anomalies": truth_anomalies(sets, cameras),
                "search": event_search(sets, cameras, settings, seed)}
    model, training = train_model(method, seed, train, settings, log)
    return {"method": method, "seed": seed, "training": training, **evaluate(model, cameras, settings, seed, method)}


def plan(settings: Settings) -> list[tuple[str, int]]:
    """Seed by seed, every method on the first seed and the seeded ones on the others."""
    return [(m, s) for s in settings.seeds for m in settings.methods if s == settings.seeds[0] or m in settings.seeded]


def run(settings: Settings, out: Path, log: Any = print) -> dict[str, Any]:
    started = time.perf_counter()
    scene = make_scene(settings, out, log)
    torch.set_num_threads(2)
    cameras, training = load_cameras(scene, settings)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "majority.json").write_text(json.dumps(majority(cameras), indent=1) + "\n")
    runs = []
    for method, seed in plan(settings):
        path = out / "runs" / f"{method}-seed{seed}.json"
        if path.is_file() and _same_conditions(json.loads(path.read_text()), settings):
            runs.append(json.loads(path.read_text()))
            log(f"{method} seed {seed}: kept from an earlier run")
            continue
        t0 = time.perf_counter()
        result = run_one(method, seed, cameras, training, settings, log)
        result["wall_s"] = time.perf_counter() - t0
        result.update(_conditions(settings))
        path.write_text(json.dumps(result, indent=1) + "\n")
        runs.append(result)
        log(f"{method} seed {seed}: done in {result['wall_s']:.0f} s")
    return _results(settings, out, runs, (time.perf_counter() - started) / 60)


def _results(settings: Settings, out: Path, runs: list[dict[str, Any]], minutes: float) -> dict[str, Any]:
    return {"settings": asdict(settings), "majority": json.loads((out / "majority.json").read_text()), "runs": runs,
            "minutes": minutes, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "revision": _revision(), "machine": f"{platform.machine()}, torch {torch.__version__}"}


UNSAID = {"held_s": 900, "precision": "fp32", "views_weight": 0.0}
"""The conditions of runs made before they were recorded with each run (a run without a budget matches any)."""


def _conditions(settings: Settings) -> dict[str, Any]:
    """What a run is kept under: its training budget, precision, views weight and held-back part."""
    return {name: getattr(settings, name) for name in ("budget_s", *UNSAID)}


def _same_conditions(run: dict[str, Any], settings: Settings) -> bool:
    """A kept run counts only under the conditions it was made with (:func:`_conditions`, ``UNSAID`` for older
    runs)."""
    return all(run.get(name, UNSAID.get(name, value)) == value for name, value in _conditions(settings).items())


def kept(settings: Settings, out: Path) -> dict[str, Any]:
    """The results of the runs finished so far (``--report-only``), in plan order."""
    paths = [out / "runs" / f"{method}-seed{seed}.json" for method, seed in plan(settings)]
    runs = [run for run in (json.loads(p.read_text()) for p in paths if p.is_file()) if _same_conditions(run, settings)]
    return _results(settings, out, runs, sum(run.get("wall_s", 0.0) for run in runs) / 60)


def _revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# -- report ------------------------------------------------------------------------------------------
def _cell(values: list[float], scale: float = 100.0) -> str:
    values = [v * scale for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "n/a"
    return f"{np.mean(values):.1f}" + (f" ± {np.std(values):.1f}" if len(values) > 1 else "")


def _of(runs: list[dict], method: str, *path: str) -> list[float]:
    found = []
    for run in runs:
        if run["method"] != method:
            continue
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            found.append(float(value))
    return found


def markdown(results: dict[str, Any], command: str) -> str:
    s, runs = results["settings"], results["runs"]
    methods = list(dict.fromkeys(run["method"] for run in runs))
    lines = [f"Generated by `{command}` on {results['date']} in {results['minutes']:.1f} minutes at revision "
             f"{results['revision'][:12]} ({results['machine']}).", "",
             f"Scene: 3 cameras x {s['duration_s']} s (seed {s['scene_seed']}, {s['anomalies_per_10min']:g} anomalies "
             f"per 10 min); `{s['profile']}` profile trained on cam0's first {s['duration_s'] - s['held_s']} s for at "
             f"most {s['budget_s']:.0f} s of wall time each in {s.get('precision', 'fp32')}"
             f"{_views(s.get('views_weight', 0.0))}; every figure on the last "
             f"{s['held_s']} s of each camera. "
             "Mean ± std over the seeds each method ran (see the runs column).", "",
             "### Event localization (linear probe fitted on cam0; accuracy / macro-F1, %)", "",
             "| features (labels) | method | runs | normalization | " + " | ".join(
                 f"{c} {VIEWPOINTS[c]}" for c in CAMERAS) + " |",
             "|---|---|---|---|" + "---|" * len(CAMERAS)]
    for kind, field in FIELDS.items():
        rows = [("most frequent class", results["majority"][kind], 1)]
        for method in methods:
            for normalization in NORMALIZATIONS:
                cells = [f"{_cell(_of(runs, method, 'localization', kind, normalization, c, 'accuracy'))} / "
                         f"{_cell(_of(runs, method, 'localization', kind, normalization, c, 'macro_f1'))}"
                         for c in CAMERAS]
                if any(cell != "n/a / n/a" for cell in cells):
                    count = sum(run["method"] == method for run in runs)
                    lines.append(f"| {kind} ({field}) | {method} | {count} | {normalization} | "
                                 + " | ".join(cells) + " |")
        for name, scores, _ in rows:
            lines.append(f"| {kind} ({field}) | {name} | | | " + " | ".join(
                f"{100 * scores[c]['accuracy']:.1f} / {100 * scores[c]['macro_f1']:.1f}" for c in CAMERAS) + " |")
    lines += ["", "### Anomaly detection (held-back clips with audio; ROC-AUC / average precision, %)", "",
              "`av`: the paper's d(z_v, z_a) (Eq. 5), the platform's `anomaly_detector: eq5`; `novelty`: "
              "`avsurv.tasks.novelty.site_novelty` (each modality against the camera's own earlier clips; the "
              "platform's default detector, which fits the statistics and medians on each camera's stored clips "
              "where this score uses the whole recording); `novelty-audio`: the same on z_a alone; "
              "`novelty-audio+sound`: on z_a and the clip's log-mel band means (`avsurv.tasks.novelty."
              "feature_novelty`; not in the platform yet); `size`: the trivial activity score |z_v| + |z_a|. "
              "`supervised` was trained on `visual_label`. `hand` (no model): `novelty` on the hand-made visual "
              "features, `sound` on each clip's log-mel band means. `truth` (no model, perfect perception): "
              "each second's ground-truth visible and audible classes as z_v and z_a (its `novelty` and search rows), "
              "`class-rarity`: how rarely the rarest class the second holds came before (bench/site.py, "
              "`class_rarity`).", "",
              "| method | detector | " + " | ".join(CAMERAS) + " |", "|---|---|" + "---|" * len(CAMERAS)]
    for method in methods:
        for detector in dict.fromkeys((*DETECTORS, *HAND_DETECTORS, *TRUTH_DETECTORS)):
            cells = [f"{_cell(_of(runs, method, 'anomalies', c, detector, 'roc_auc'))} / "
                     f"{_cell(_of(runs, method, 'anomalies', c, detector, 'ap'))}" for c in CAMERAS]
            if cells[0] != "n/a / n/a":
                lines.append(f"| {method} | {detector} | " + " | ".join(cells) + " |")
    lines += ["", "### Event search and cross-modal retrieval (%)", "",
              "Audio-visual search within each camera's held-back part (P@1 / P@5 / mAP; relevant: same `label`; "
              "`hand`: on the hand-made visual features and band means, `truth`: on the true classes); "
              "cross-modal R@1 / R@5 on cam0's held-back clips among 100; training epochs and seconds.", "",
              "| method | " + " | ".join(f"search {c}" for c in CAMERAS) + " | R@1 / R@5 | epochs | training s |",
              "|---|" + "---|" * (len(CAMERAS) + 3)]
    for method in methods:
        cells = [" / ".join(_cell(_of(runs, method, "search", c, k)) for k in ("p_at_1", "p_at_5", "map"))
                 for c in CAMERAS]
        recall = " / ".join(_cell(_of(runs, method, "retrieval", k)) for k in ("recall_at_1", "recall_at_5"))
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {recall} | "
                     f"{_cell(_of(runs, method, 'training', 'epochs'), 1)} | "
                     f"{_cell(_of(runs, method, 'training', 'seconds'), 1)} |")
    epg = [(run, row) for run in runs for row in run.get("training", {}).get("label_precision", [])]
    if epg:
        lines += ["", "### EPG's pair labels per epoch", "",
                  f"On {LABEL_SAMPLE} training clips in training-size batches: extra positives per anchor (Eq. 1), "
                  "the share of them whose visible / audible class is the anchor's, and that share among all "
                  "pairs of a batch (base rate), %.", "",
                  "| method | seed | after epoch | extra positives per anchor | visual class matches (base) | "
                  "audible class matches (base) |", "|---|---|---|---|---|---|"]
        lines += [f"| {run['method']} | {run['seed']} | {row['after_epoch']} | "
                  f"{row['extra_positives_per_anchor']:.1f} | {100 * row['visual_precision']:.1f} "
                  f"({100 * row['visual_base_rate']:.1f}) | {100 * row['audio_precision']:.1f} "
                  f"({100 * row['audio_base_rate']:.1f}) |" for run, row in epg]
    return "\n".join(lines) + "\n"


def _views(weight: float) -> str:
    return f", with the audio encoder's views term at weight {weight:g}" if weight else ""


BEGIN, END = "<!-- site:begin -->", "<!-- site:end -->"


def write_report(text: str, path: Path) -> None:
    """Replaces the site-scale section of RESULTS.md (between the markers), or appends it."""
    current = path.read_text() if path.is_file() else "# Results\n"
    section = f"{BEGIN}\n## Site scale (issue 12)\n\n{text}{END}\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 150 s scene and short runs (what CI runs)")
    parser.add_argument("--out", type=Path, default=Path("results/site"), help="scene, runs and results.json")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    parser.add_argument("--methods", nargs="+", choices=(*METHODS, *BASELINES), help="methods to run")
    parser.add_argument("--budget-s", type=float, help="wall-time budget of each training run (default 600)")
    parser.add_argument("--precision", choices=PRECISIONS, help="training and embedding precision (default fp32)")
    parser.add_argument("--views-weight", type=float,
                        help="weight of the audio encoder's views term in training (default 0: off, as the paper)")
    parser.add_argument("--scene-seed", type=int,
                        help="seed of the generated scene (default 31; 32: the validation scene)")
    parser.add_argument("--duration-s", type=int, help="length of each camera's recording (default 3600)")
    parser.add_argument("--held-s", type=int, help="held-back last part of each camera, evaluated (default 900)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the runs finished so far, run nothing (minutes: their run time)")
    parser.add_argument("--report", type=Path, default=Path("docs/RESULTS.md"),
                        help="where the tables go (full runs only; default docs/RESULTS.md, whose site-scale tables "
                             "are scene 31's: give another file for another scene)")
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    overrides = {"seeds": tuple(args.seeds) if args.seeds else None,
                 "methods": tuple(args.methods) if args.methods else None, "budget_s": args.budget_s,
                 "precision": args.precision, "views_weight": args.views_weight, "scene_seed": args.scene_seed,
                 "duration_s": args.duration_s, "held_s": args.held_s}
    settings = Settings(**{**asdict(settings), **{k: v for k, v in overrides.items() if v is not None}})
    if args.report_only:
        results = kept(settings, args.out)
    else:
        results = run(settings, args.out, log=lambda line: print(line, flush=True))
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results, "python bench/site.py" + (" --quick" if args.quick else ""))
    print(text)
    if not args.quick:
        write_report(text, args.report)


if __name__ == "__main__":
    main()
