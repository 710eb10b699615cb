"""Representation quality: the EPG paper's experiments on a generated multi-camera scene.

    python bench/quality.py [--quick] [--out DIR]      (normally run through bench/suite.py)

One scene (``Settings``; full: 3 cameras x 5 minutes, sized so that the whole suite fits in 60 minutes on
2 cores) films one intersection; cam0 is the reference viewpoint, cam1 "similar", cam2 "challenging" (the
generator's viewpoints; with more cameras they cycle). Every method learns on cam0 only, with the
same encoders (``tiny`` profile), epochs and seeds:
- epg, tpg, avbt, infonce: self-supervised (``avsurv train``);
- random: the untrained encoders (floor); supervised: the same encoders trained end to end on cam0's
  event labels (ceiling).
Then, per method and seed, on frozen embeddings:
1. Event localization, EPG Table 1 protocol: a linear probe (``avsurv probe``) fitted on cam0's labelled
   clips, segment-wise accuracy on the similar and the challenging cameras; features audio-visual
   ([z_v, z_a]), visual (z_v) and audio (z_a).
2. Anomaly detection on cam0 (one model per location, scored on its own stream, EPG section 4.3): ROC-AUC
   of d(z_v, z_a) against the generator's anomaly seconds, precision/recall at mean + 2 std; and for
   comparison one-modality scores (``novelty_scores``: distance to the 5th nearest clip outside the
   exclusion window, in z_a or z_v alone).
3. Event search on cam0: queries are labelled clips of classes that recur outside the exclusion window,
   up to ``queries_per_class`` per class; search under the paper's rules (exclusion and separation
   windows); precision@1, @5 and average precision over the whole separated ranked list (relevant = the
   same event class); audio-visual, audio and visual search.
4. Supervised heads (issue 6) on the EPG and TPG features: TACMA and CCLN (full and weak labels) fitted on
   cam0 like the probe, accuracy on the similar and challenging cameras; AVACA trained on cam0's weak
   (window-level) anomaly labels, ROC-AUC on the other cameras next to the label-free d(z_v, z_a) there.
5. Ablations (EPG, first seed): sigma and w as in EPG Tables 2 and 3. A run "did not converge" when a loss
   is not finite or its last epoch ends without aligned pairs closer than negative pairs.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avsurv.heads import evaluate_anomaly, evaluate_localization, read_anomaly_labels
from avsurv.labels import Labels, labels_at, read_labels
from avsurv.learning.data import ClipTable, load_clips, mel_statistics
from avsurv.learning.embed import embed_table
from avsurv.learning.embeddings import EmbeddingSet, concat
from avsurv.learning.evaluate import cross_modal_recall
from avsurv.learning.modeldir import load_model
from avsurv.learning.train import SUPERVISED, TrainConfig, Trainer
from avsurv.models import AudioVisualModel, build_model
from avsurv.synth import SceneConfig, generate_scene
from avsurv.tasks.anomalies import anomaly_scores, novelty_scores
from avsurv.tasks.metrics import average_precision, precision_at_k, precision_recall, roc_auc, roc_curve
from avsurv.tasks.probe import FEATURES, evaluate_probe
from avsurv.tasks.search import MODES, search_by_clip

Log = Callable[[str], None]
SELF_SUPERVISED = ("epg", "tpg", "avbt", "infonce")
METHODS = ("random", *SELF_SUPERVISED, SUPERVISED)
HEAD_METHODS = ("epg", "tpg")
"""The features the supervised heads are evaluated on."""
HEADS = ("tacma", "ccln", "ccln_weak")
BACKGROUND = "background"
"""The generator's label of seconds without an event: not a search query."""


@dataclass(frozen=True)
class Settings:
    duration_s: float = 300.0
    cameras: int = 3
    anomalies_per_10min: float = 12.0
    """Above the generator's default (3) so that cam0 holds enough anomalous seconds for a ROC curve."""
    scene_seed: int = 11
    epochs: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    profile: str = "tiny"
    sigmas: tuple[float, ...] = (0, 1, 10, 30, 60, 120)
    ws: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    safeguards: tuple[dict[str, Any], ...] = ({"epg_switch": "aligned"}, {"max_positives": 4},
                                              {"epg_switch": "aligned", "max_positives": 4})
    """EPG's documented label safeguards (PAPER_NOTES "Measured risks"), ablated against the paper's rule."""
    label_rules: tuple[str, ...] = ("and", "cross")
    """Eq. 1 with "and", and the cross-modal reading of the threshold (``epg_labels``), against "or"."""
    window_s: float = 60.0
    """Search exclusion and separation (the paper's 1 minute) and the one-modality scores' exclusion."""
    queries_per_class: int = 10
    head_window: int = 10
    """Consecutive clips per window of the supervised heads (their default)."""


FULL = Settings()
QUICK = Settings(duration_s=60, cameras=3, anomalies_per_10min=20, epochs=1, seeds=(0, 1), sigmas=(0, 10),
                 ws=(0.5, 1.0), safeguards=({"epg_switch": "aligned", "max_positives": 4},), label_rules=("cross",),
                 window_s=5.0,
                 queries_per_class=2, head_window=5)


@dataclass
class Scene:
    tables: dict[str, ClipTable]
    viewpoints: dict[str, str]
    labels: Labels
    anomaly_labels: Labels
    anomalous: set[tuple[str, int]] = field(default_factory=set)

    def split(self, viewpoint: str) -> list[str]:
        return [c for c, v in self.viewpoints.items() if v == viewpoint]


def make_scene(settings: Settings, root: Path, log: Log) -> Scene:
    started = time.perf_counter()
    config = SceneConfig(seed=settings.scene_seed, duration_s=settings.duration_s, cameras=settings.cameras,
                         anomalies_per_10min=settings.anomalies_per_10min, jobs=2)
    generate_scene(config, root, progress=False)
    truth = json.loads((root / "ground_truth.json").read_text())
    viewpoints = {c["camera_id"]: c["viewpoint"] for c in truth["cameras"]}
    tables = {camera: load_clips([root / c["file"]], progress=False)
              for camera, c in zip(viewpoints, truth["cameras"], strict=True)}
    anomalous = {(camera, int(s["t"])) for camera, seconds in truth["seconds"].items() for s in seconds if s["anomaly"]}
    log(f"scene: {len(viewpoints)} cameras x {settings.duration_s:.0f} s rendered and segmented in "
        f"{time.perf_counter() - started:.0f} s")
    truth_file = root / "ground_truth.json"
    return Scene(tables, viewpoints, read_labels(truth_file), read_anomaly_labels(truth_file), anomalous)


# -- models -----------------------------------------------------------------------------------------
def train_method(method: str, seed: int, scene: Scene, settings: Settings, scratch: Path,
                 **overrides: Any) -> tuple[AudioVisualModel, dict, float]:
    """(model, its config, training seconds) of one method trained on cam0."""
    table = scene.tables["cam0"]
    started = time.perf_counter()
    if method == "random":
        torch.manual_seed(seed)
        model = build_model(settings.profile)
        model.encoders["audio"].set_normalization(*mel_statistics(table.log_mel))
        model.eval()
        return model, {"sha256": f"untrained-seed{seed}", "profile": settings.profile, "method": "random",
                       "history": []}, 0.0
    config = TrainConfig(profile=settings.profile, method=method, epochs=settings.epochs, seed=seed, **overrides)
    labels = labels_at(table.camera_ids, table.starts, scene.labels) if method == SUPERVISED else None
    out = scratch / f"{method}-{seed}-{time.time_ns()}"
    Trainer(table, out, config, progress=False, log=lambda _: None, labels=labels).run()
    seconds = time.perf_counter() - started
    model, model_config = load_model(out)
    return model, model_config, seconds


def embed_scene(model: AudioVisualModel, config: dict, scene: Scene) -> dict[str, EmbeddingSet]:
    return {camera: embed_table(model, config, table) for camera, table in scene.tables.items()}


# -- the three tasks --------------------------------------------------------------------------------
def _tests(sets: dict[str, EmbeddingSet], scene: Scene) -> dict[str, EmbeddingSet]:
    return {split: concat([sets[c] for c in scene.split(split)]) for split in ("similar", "challenging")
            if scene.split(split)}


def localization(sets: dict[str, EmbeddingSet], scene: Scene, seed: int) -> dict[str, dict[str, float]]:
    """features -> {similar, challenging} -> segment-wise accuracy of a linear probe fitted on cam0."""
    tests = _tests(sets, scene)
    result = {}
    for features in FEATURES:
        report = evaluate_probe([sets["cam0"]], tests, scene.labels, features=features, seed=seed)
        result[features] = {s.name: s.accuracy for s in report.sets}
    result["majority"] = majority_accuracy(sets["cam0"], tests, scene.labels)
    return result


def majority_accuracy(train: EmbeddingSet, tests: dict[str, EmbeddingSet], labels: Labels) -> dict[str, float]:
    """Per test set, the accuracy of always predicting the training camera's most frequent class."""
    every = (labels_at(s.camera_id.tolist(), s.clip_start, labels) for s in (train, *tests.values()))
    known = [y[y != ""] for y in every]
    classes, counts = np.unique(known[0], return_counts=True)
    majority = classes[counts.argmax()]
    return {name: float((y == majority).mean()) for name, y in zip(tests, known[1:], strict=True)}


def heads(sets: dict[str, EmbeddingSet], scene: Scene, seed: int, window: int) -> dict[str, Any]:
    """TACMA / CCLN accuracy per camera set, and AVACA's ROC-AUC on the other cameras next to d(z_v, z_a)'s."""
    tests, cam0, labels = _tests(sets, scene), sets["cam0"], scene.labels
    result: dict[str, Any] = {
        "tacma": evaluate_localization("tacma", cam0, tests, labels, seed, window=window),
        "ccln": evaluate_localization("ccln", cam0, tests, labels, seed, window=window),
        "ccln_weak": evaluate_localization("ccln", cam0, tests, labels, seed, window=window, supervision="weak"),
    }
    others = concat([s for camera, s in sets.items() if camera != "cam0"])
    positive = np.array([(str(c), int(t)) in scene.anomalous for c, t in
                         zip(others.camera_id, np.floor(others.clip_start + 1e-6).astype(int), strict=True)])
    keep = others.has_audio
    result["avaca_roc_auc"] = evaluate_anomaly(cam0, others, scene.anomaly_labels, seed, window=window)
    result["label_free_roc_auc"] = roc_auc(anomaly_scores(others)[keep], positive[keep])
    return result


def anomaly_detection(embeddings: EmbeddingSet, scene: Scene, settings: Settings) -> dict[str, dict[str, Any]]:
    """score kind -> ROC-AUC, precision and recall at mean + 2 std, and the ROC curve, on cam0."""
    seconds = np.floor(embeddings.clip_start + 1e-6).astype(int)
    positive = np.array([(str(c), int(t)) in scene.anomalous for c, t in zip(embeddings.camera_id, seconds,
                                                                                strict=True)])
    keep = embeddings.has_audio
    scores = {
        "av": anomaly_scores(embeddings),
        "audio": novelty_scores(embeddings.z_a, embeddings.clip_start, exclusion_s=settings.window_s),
        "visual": novelty_scores(embeddings.z_v, embeddings.clip_start, exclusion_s=settings.window_s),
    }
    result = {}
    for kind, score in scores.items():
        s, p = score[keep], positive[keep]
        threshold = s.mean() + 2 * s.std()  # calibrated on the same (training) clips, as the paper does
        precision, recall = precision_recall(s > threshold, p)
        fpr, tpr = roc_curve(s, p)
        result[kind] = {"roc_auc": roc_auc(s, p), "precision": precision, "recall": recall,
                        "anomalous_clips": int(p.sum()), "clips": len(p),
                        "roc": [fpr.round(4).tolist(), tpr.round(4).tolist()]}
    return result


def search_queries(embeddings: EmbeddingSet, labels: np.ndarray, settings: Settings, seed: int) -> np.ndarray:
    """Rows of labelled clips (``labels``: str [N], one per clip) whose class also occurs outside the query's
    exclusion window."""
    rng, rows = np.random.default_rng(seed), []
    for label in sorted(set(labels.tolist()) - {BACKGROUND, ""}):
        same = np.flatnonzero(labels == label)
        starts = embeddings.clip_start[same]
        recurring = same[(np.abs(starts[:, None] - starts[None, :]) > settings.window_s).any(axis=1)]
        rows += rng.permutation(recurring)[: settings.queries_per_class].tolist()
    return np.array(sorted(rows), dtype=int)


def event_search(embeddings: EmbeddingSet, scene: Scene, settings: Settings, seed: int) -> dict[str, dict[str, float]]:
    """mode -> precision@1, precision@5, mAP over the query clips (and their number)."""
    labels = labels_at(embeddings.camera_id.tolist(), embeddings.clip_start, scene.labels)
    queries = search_queries(embeddings, labels, settings, seed)
    result = {}
    for mode in MODES:
        scores = {"p_at_1": [], "p_at_5": [], "ap": []}
        for row in queries:
            ranked = search_by_clip(embeddings, embeddings, int(row), mode=mode, top_k=len(labels),
                                    exclusion_s=settings.window_s, separation_s=settings.window_s)
            relevant = np.array([labels[r.row] == labels[row] for r in ranked], dtype=bool)
            scores["p_at_1"].append(precision_at_k(relevant, 1))
            scores["p_at_5"].append(precision_at_k(relevant, 5))
            # A query whose separated ranking holds no clip of its class found nothing: AP 0 (not left out).
            scores["ap"].append(average_precision(relevant) if relevant.any() else 0.0)
        result[mode] = {"p_at_1": _mean(scores["p_at_1"]), "p_at_5": _mean(scores["p_at_5"]),
                        "map": _mean(scores["ap"]), "queries": len(queries)}
    return result


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def converged(history: list[dict]) -> bool:
    """Finite losses, and the last epoch ended with aligned pairs closer than negative pairs."""
    if not history:
        return True  # nothing was trained
    last = history[-1]
    return all(np.isfinite(h["loss"]) for h in history) and last["aligned_distance"] < last["negative_distance"]


def evaluate(method: str, seed: int, scene: Scene, settings: Settings, scratch: Path,
             tasks: tuple[str, ...] = ("localization", "anomaly", "search", "heads"), **overrides: Any
             ) -> tuple[dict[str, Any], EmbeddingSet]:
    """The numbers of one trained model, and its embeddings of cam0."""
    model, config, seconds = train_method(method, seed, scene, settings, scratch, **overrides)
    sets = embed_scene(model, config, scene)
    cam0 = sets["cam0"]
    history = config.get("history", [])
    row: dict[str, Any] = {
        "method": method, "seed": seed, "train_seconds": seconds, "overrides": overrides,
        "converged": converged(history),
        "final_epoch": history[-1] if history else None,
        "recall": cross_modal_recall(cam0.z_v, cam0.z_a, candidates=min(100, len(cam0)), seed=seed),
    }
    if "localization" in tasks:
        row["localization"] = localization(sets, scene, seed)
    if "anomaly" in tasks:
        row["anomaly"] = anomaly_detection(cam0, scene, settings)
    if "search" in tasks:
        row["search"] = event_search(cam0, scene, settings, seed)
    if "heads" in tasks and method in HEAD_METHODS:
        row["heads"] = heads(sets, scene, seed, settings.head_window)
    return row, cam0


# -- the whole section ------------------------------------------------------------------------------
def run(quick: bool, out: Path, log: Log = print, scene_dir: Path | None = None) -> dict[str, Any]:
    """Every experiment; writes nothing but the search figure (``out/search.png``), returns the numbers."""
    settings = QUICK if quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        scene = make_scene(settings, scene_dir or root / "scene", log)
        runs, shown, first = [], {}, settings.seeds[0]
        for method in METHODS:
            for seed in settings.seeds:
                row, cam0 = evaluate(method, seed, scene, settings, root)
                runs.append(row)
                log(_run_line(row))
                if seed == first and method in ("epg", "tpg"):
                    shown[method] = cam0
        ablations = []
        default_epg = next(r for r in runs if r["method"] == "epg" and r["seed"] == first)
        for name, overrides in ablation_grid(settings):
            value = overrides.get(name, ", ".join(f"{k} {_value(v)}" for k, v in overrides.items()))
            if all(getattr(TrainConfig(), k) == v for k, v in overrides.items()):  # the main EPG run of this seed
                ablation = {k: default_epg[k] for k in ("method", "seed", "train_seconds", "converged",
                                                        "final_epoch", "recall", "localization")}
            else:
                ablation, _ = evaluate("epg", first, scene, settings, root, tasks=("localization",), **overrides)
                log(_run_line(ablation | {"parameter": name, "value": value}))
            ablations.append(ablation | {"parameter": name, "value": value})
        figure = search_figure(shown, scene, settings, out / "search.png")
    return {"settings": asdict(settings), "runs": runs, "ablations": ablations, "search_figure": figure,
            "seconds": time.perf_counter() - started}


def ablation_grid(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """(parameter, the TrainConfig overrides of one run): sigma, w, the label rules, then the safeguards."""
    return ([("sigma", {"sigma": float(v)}) for v in settings.sigmas] + [("w", {"w": float(v)}) for v in settings.ws]
            + [("label_rule", {"label_rule": v}) for v in settings.label_rules]
            + [("safeguard", dict(overrides)) for overrides in settings.safeguards])


def _run_line(row: dict[str, Any]) -> str:
    av = row["localization"]["av"]
    extra = f" {row['parameter']}={row['value']}" if "parameter" in row else ""
    return (f"{row['method']:>10} seed {row['seed']}{extra}: AV localization "
            + ", ".join(f"{k} {v:.3f}" for k, v in av.items())
            + f"; R@1 {row['recall']['recall_at_1']:.3f}; trained in {row['train_seconds']:.0f} s"
            + ("" if row["converged"] or "parameter" not in row else " (did not converge)"))


def search_figure(embeddings_of: dict[str, EmbeddingSet], scene: Scene, settings: Settings,
                  path: Path) -> dict[str, Any]:
    """EPG Fig. 6 style: one query clip and its top audio-visual results per method (cam0, first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, seed, top = scene.tables["cam0"], settings.seeds[0], 4
    labels = labels_at(table.camera_ids, table.starts, scene.labels)
    rows: list[tuple[str, int, list]] = []
    for method, embeddings in embeddings_of.items():
        query = _figure_query(search_queries(embeddings, labels, settings, seed), labels)
        results = search_by_clip(embeddings, embeddings, query, top_k=top, exclusion_s=settings.window_s,
                                 separation_s=settings.window_s)
        rows.append((method, query, [(r.row, labels[r.row], r.distance) for r in results]))
    figure, axes = plt.subplots(len(rows), top + 1, figsize=(2.4 * (top + 1), 1.9 * len(rows)), squeeze=False)
    for (method, query, results), line in zip(rows, axes, strict=True):
        cells = [(query, f"{method.upper()} query\n{labels[query]} @ {table.starts[query]:.0f} s")]
        cells += [(r, f"{label} @ {table.starts[r]:.0f} s\nd = {d:.2f}") for r, label, d in results]
        for ax in line:
            ax.axis("off")
        for ax, (row, title) in zip(line, cells, strict=False):
            ax.imshow(table.frames[row, 2])
            ax.set_title(title, fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {"path": path.name, "rows": [{"method": m, "query_start": float(table.starts[q]), "query": labels[q],
                                         "results": [{"start": float(table.starts[r]), "label": str(lab),
                                                      "distance": float(d)} for r, lab, d in res]}
                                        for m, q, res in rows]}


def _figure_query(queries: np.ndarray, labels: np.ndarray) -> int:
    """A siren query when there is one (the paper's examples B and C), else the first query."""
    for wanted in ("police", "ambulance"):
        found = [q for q in queries if labels[q] == wanted]
        if found:
            return int(found[0])
    return int(queries[0])


# -- report -----------------------------------------------------------------------------------------
PAPER_TABLE1 = {  # EPG Table 1 (ToCaDa), segment-wise accuracy %, (similar, challenging)
    ("av", "epg"): (86.92, 77.48), ("av", "tpg"): (71.33, 60.47),
    ("visual", "epg"): (85.42, 70.02), ("visual", "tpg"): (60.71, 44.92),
    ("audio", "epg"): (81.37, 79.48), ("audio", "tpg"): (70.66, 60.43),
}
PAPER_SIGMA = {0: (86.92, 77.48), 1: (86.21, 78.62), 10: (85.32, 77.33), 30: (87.41, 79.82), 60: (87.92, 79.82),
               120: (86.31, 78.32)}  # EPG Table 2
PAPER_W = {0.0: None, 0.25: (85.21, 75.16), 0.5: (86.92, 77.48), 0.75: (85.44, 76.83), 1.0: None}  # Table 3; None = DNC
FEATURE_NAMES = {"av": "audio-visual", "visual": "visual", "audio": "audio"}


def _stats(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if np.isfinite(v)]
    return (float(np.mean(values)), float(np.std(values))) if values else (float("nan"), float("nan"))


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, std = _stats(values)
    return "n/a" if not np.isfinite(mean) else f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _of(runs: list[dict], method: str, *path: str) -> list[float]:
    values = []
    for row in runs:
        if row["method"] == method:
            value: Any = row
            for key in path:
                value = value[key]
            values.append(float(value))
    return values


MAJORITY = ("localization", "majority")


def markdown(results: dict[str, Any], command: str, images: str = "results/") -> str:
    """The section of RESULTS.md; figures are linked under ``images``."""
    runs, settings = results["runs"], results["settings"]
    seeds = len(settings["seeds"])
    lines = [f"Scene: {settings['cameras']} cameras x {settings['duration_s']:.0f} s "
             f"(scene seed {settings['scene_seed']}, "
             f"{settings['anomalies_per_10min']:g} anomalies per 10 min); `{settings['profile']}` profile, "
             f"{settings['epochs']} epochs, trained on cam0 only; mean ± std over {seeds} seeds "
             f"({', '.join(map(str, settings['seeds']))}). Regenerate: `{command}`.", "",
             "### Event localization (EPG Table 1 protocol)", "",
             "Segment-wise accuracy (%) of a linear probe fitted on cam0's frozen features. Paper: ToCaDa, "
             "X3D-M from Kinetics, hours of video; ours: a generated scene, encoders from scratch.", "",
             "| features | method | similar | challenging | paper similar | paper challenging |",
             "|---|---|---|---|---|---|",
             f"| any | cam0's most frequent class, always | {_cell(_of(runs, 'random', *MAJORITY, 'similar'))}"
             f" | {_cell(_of(runs, 'random', *MAJORITY, 'challenging'))} | | |"]
    for features in FEATURES:
        for method in METHODS:
            paper = PAPER_TABLE1.get((features, method))
            lines.append(f"| {FEATURE_NAMES[features]} | {method} | "
                         f"{_cell(_of(runs, method, 'localization', features, 'similar'))} | "
                         f"{_cell(_of(runs, method, 'localization', features, 'challenging'))} | "
                         + (f"{paper[0]} | {paper[1]} |" if paper else "| |"))
    chance = runs[0]["recall"]
    lines += ["", f"Cross-modal retrieval on cam0 (true audio of a clip's video among {1 / chance['chance_at_1']:.0f};"
              f" chance {100 * chance['chance_at_1']:.1f} % / {100 * chance['chance_at_5']:.1f} %) and training time:",
              "", "| method | R@1 (%) | R@5 (%) | training s |", "|---|---|---|---|"]
    for method in METHODS:
        lines.append(f"| {method} | {_cell(_of(runs, method, 'recall', 'recall_at_1'))} | "
                     f"{_cell(_of(runs, method, 'recall', 'recall_at_5'))} | "
                     f"{_cell(_of(runs, method, 'train_seconds'), 1.0, 0)} |")
    lines += ["", f"![localization]({images}localization.png)", "", "### Anomaly detection", "",
              "cam0, scored on its own stream; threshold mean + 2 std of the same clips' scores (EPG section 4.3). "
              "`av` is the paper's d(z_v, z_a); `audio` and `visual` score each clip by its distance to its 5th "
              f"nearest clip more than {settings['window_s']:g} s away in one modality. ROC-AUC and precision/recall "
              "in %.", "", "| method | score | ROC-AUC | precision | recall |", "|---|---|---|---|---|"]
    for method in METHODS:
        for kind in ("av", "audio", "visual"):
            lines.append(f"| {method} | {kind} | {_cell(_of(runs, method, 'anomaly', kind, 'roc_auc'))} | "
                         f"{_cell(_of(runs, method, 'anomaly', kind, 'precision'))} | "
                         f"{_cell(_of(runs, method, 'anomaly', kind, 'recall'))} |")
    first = runs[0]["anomaly"]["av"]
    lines += ["", f"{first['anomalous_clips']} of {first['clips']} cam0 clips are anomalous. "
              "The paper evaluates anomalies only qualitatively (its Fig. 5).", "", f"![roc]({images}roc.png)", "",
              "### Event search", "",
              f"Query clips of recurring classes on cam0 ({runs[0]['search']['av']['queries']} per seed), results "
              f"under the paper's rules ({settings['window_s']:g} s exclusion and separation); relevant = same event "
              "class. Precision@1 and @5 over every query (a ranking shorter than 5, as the separation makes on a "
              "short scene, caps P@5 below 100); mAP: the mean over every query of the average precision over its "
              "separated ranking (0 for a query whose ranking holds no clip of its class). In %.", "",
              "| method | search | P@1 | P@5 | mAP |", "|---|---|---|---|---|"]
    for method in METHODS:
        for mode in MODES:
            lines.append(f"| {method} | {mode} | {_cell(_of(runs, method, 'search', mode, 'p_at_1'))} | "
                         f"{_cell(_of(runs, method, 'search', mode, 'p_at_5'))} | "
                         f"{_cell(_of(runs, method, 'search', mode, 'map'))} |")
    lines += ["", "Query and top audio-visual results (first seed; frame at 0.5 s of each clip), like the paper's "
              "Fig. 6:", "", f"![search]({images}search.png)", ""]
    lines += heads_markdown(runs)
    lines += ["### Ablations (EPG Tables 2 and 3)", "",
              f"EPG, seed {settings['seeds'][0]}, one setting changed from the defaults at a time; audio-visual "
              "localization accuracy (%); DNC: did not converge (a non-finite loss, or aligned pairs not closer "
              "than negatives at the end). Positives: EPG labels' positives per anchor in the last epoch. "
              "Safeguards: `epg_switch aligned` keeps TPG labels until an epoch ends with the encoders aligned "
              "(the default is the paper's switch after one TPG epoch); `max_positives 4` keeps the 4 nearest extra "
              "positives per anchor. Label rule: Eq. 1 with `or` (the default) or `and`; `cross` compares the "
              "pair's own cross-modal distance with the aligned pair's (the other reading of the paper's section "
              "4.1). R@1 / R@5: the true audio among 100 candidates on cam0 (chance 1 / 5).", "",
              "| parameter | value | similar | challenging | R@1 | R@5 | converged | positives | paper similar "
              "| paper chall. |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["ablations"]:
        name, value = row["parameter"], row["value"]
        paper = {"sigma": PAPER_SIGMA, "w": PAPER_W}.get(name, {}).get(value, "")
        acc, last = row["localization"]["av"], row["final_epoch"] or {}
        cells = (f"{100 * acc['similar']:.1f} | {100 * acc.get('challenging', float('nan')):.1f} | "
                 f"{100 * row['recall']['recall_at_1']:.1f} | {100 * row['recall']['recall_at_5']:.1f}")
        lines.append(f"| {name} | {_value(value)} | {cells} | {'yes' if row['converged'] else 'DNC'} | "
                     f"{last.get('positives_per_anchor', float('nan')):.1f} | "
                     + ("DNC | DNC |" if paper is None else f"{paper[0]} | {paper[1]} |" if paper else "| |"))
    lines += ["", f"![ablations]({images}ablations.png)", ""]
    return "\n".join(lines)


def heads_markdown(runs: list[dict]) -> list[str]:
    lines = ["### Supervised heads on frozen features (TACMA, CCLN, AVACA)", "",
             "Fitted on cam0's labels over windows of consecutive clips, on the EPG and TPG features of each "
             "seed; segment-wise accuracy (%) next to the linear probe's (audio-visual). CCLN weak: one label per "
             "window. Papers: TACMA 77.41 / 67.20 on ToCaDa similar / challenging (EPG Table 1), CCLN 79.9 % on "
             "AVE; ours are small CPU-trained heads on 512-d clip embeddings of a generated scene.", "",
             "| features | head | similar | challenging |", "|---|---|---|---|"]
    for method in HEAD_METHODS:
        lines.append(f"| {method} | linear probe | {_cell(_of(runs, method, 'localization', 'av', 'similar'))} | "
                     f"{_cell(_of(runs, method, 'localization', 'av', 'challenging'))} |")
        for head in HEADS:
            lines.append(f"| {method} | {head} | {_cell(_of(runs, method, 'heads', head, 'similar'))} | "
                         f"{_cell(_of(runs, method, 'heads', head, 'challenging'))} |")
    lines += ["", "Anomalies on the cameras not trained on: AVACA (trained on cam0's window-level anomaly labels) "
              "against the label-free d(z_v, z_a); ROC-AUC (%).", "",
              "| features | AVACA | label-free d(z_v, z_a) |", "|---|---|---|"]
    for method in HEAD_METHODS:
        lines.append(f"| {method} | {_cell(_of(runs, method, 'heads', 'avaca_roc_auc'))} | "
                     f"{_cell(_of(runs, method, 'heads', 'label_free_roc_auc'))} |")
    return [*lines, ""]


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def figures(results: dict[str, Any], out: Path) -> None:
    """localization.png, roc.png and ablations.png (search.png is drawn by :func:`run`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, features in zip(axes, FEATURES, strict=True):
        for offset, split in ((-0.2, "similar"), (0.2, "challenging")):
            stats = [_stats(_of(runs, m, "localization", features, split)) for m in METHODS]
            ax.bar(np.arange(len(METHODS)) + offset, [100 * m for m, _ in stats], 0.4,
                   yerr=[100 * s for _, s in stats], label=split, capsize=2)
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=30)
        ax.set_title(FEATURE_NAMES[features])
    axes[0].set_ylabel("segment-wise accuracy (%)")
    axes[0].legend()
    _save(figure, out / "localization.png")
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    first = results["settings"]["seeds"][0]
    for ax, kind in zip(axes, ("av", "audio", "visual"), strict=True):
        for row in runs:
            if row["seed"] == first:
                fpr, tpr = row["anomaly"][kind]["roc"]
                ax.plot(fpr, tpr, label=f"{row['method']} ({row['anomaly'][kind]['roc_auc']:.2f})")
        ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        ax.set_title(f"{kind} score")
        ax.set_xlabel("false positive rate")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("true positive rate")
    _save(figure, out / "roc.png")
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, name in zip(axes, ("sigma", "w"), strict=True):
        rows = [r for r in results["ablations"] if r["parameter"] == name]
        for split in ("similar", "challenging"):
            ax.plot(range(len(rows)), [100 * r["localization"]["av"].get(split, np.nan) for r in rows], "o-",
                    label=split)
        for i, r in enumerate(rows):
            if not r["converged"]:
                ax.annotate("DNC", (i, 100 * r["localization"]["av"]["similar"]), fontsize=8)
        ax.set_xticks(range(len(rows)), [f"{r['value']:g}" for r in rows])
        ax.set_xlabel(name)
    axes[0].set_ylabel("audio-visual accuracy (%)")
    axes[0].legend()
    _save(figure, out / "ablations.png")


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _override(text: str) -> dict[str, Any]:
    key, _, value = text.partition("=")
    if not hasattr(TrainConfig, key) or not value:
        raise SystemExit(f"--ablate wants KEY=VALUE with a TrainConfig field, got {text!r}")
    default = getattr(TrainConfig(), key)
    return {key: type(default)(value) if default is not None else int(value)}


def ablate(settings: Settings, overrides: list[dict[str, Any]]) -> None:
    """One more ablation row per override, on the suite's scene (the same scene seed and settings)."""
    with tempfile.TemporaryDirectory() as scratch:
        scene = make_scene(settings, Path(scratch) / "scene", print)
        for override in [{}, *overrides]:
            row, _ = evaluate("epg", settings.seeds[0], scene, settings, Path(scratch), tasks=("localization",),
                              **override)
            print(_run_line(row | {"parameter": "override", "value": override or "defaults"}), flush=True)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 60 s scene, 1 epoch, 2 seeds (CI)")
    parser.add_argument("--out", type=Path, default=Path("quality-results"), help="output directory")
    parser.add_argument("--ablate", nargs="+", metavar="KEY=VALUE",
                        help="instead: EPG on the same scene and first seed with each TrainConfig override "
                        "(e.g. tau=0.5 tau=2), audio-visual localization only")
    args = parser.parse_args()
    if args.ablate:
        ablate(QUICK if args.quick else FULL, [_override(text) for text in args.ablate])
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args.quick, args.out)
    (args.out / "quality.json").write_text(json.dumps(results, indent=1, default=float))
    figures(results, args.out)
    print(markdown(results, "python bench/quality.py" + (" --quick" if args.quick else ""), images=""))


if __name__ == "__main__":
    main()

