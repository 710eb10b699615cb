"""The downstream-task sub-commands: ``calibrate``, ``anomalies``, ``search`` and ``probe``.

Each ``register_*`` adds one sub-command whose ``func(args)`` returns an exit code; bad input prints
``avsurv <cmd>: error: <one line>`` to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from avsurv.clisupport import add_command, add_embeddings, reports_errors
from avsurv.constants import ANOMALY_STDS, SEARCH_EXCLUSION_S, SEARCH_SEPARATION_S, W
from avsurv.errors import TaskError
from avsurv.labels import LABEL_FIELDS, read_labels
from avsurv.learning.calibration import Calibration
from avsurv.learning.embeddings import EmbeddingSet, load_many
from avsurv.learning.modeldir import CALIBRATION
from avsurv.tasks.anomalies import calibrate, detect
from avsurv.tasks.probe import (
    DEFAULT_STEPS,
    DEFAULT_WEIGHT_DECAY,
    FEATURE_LABEL_FIELD,
    FEATURES,
    NORMALIZATIONS,
    ProbeReport,
    default_label_field,
    evaluate_probe,
)
from avsurv.tasks.search import DEFAULT_TOP_K, MODES, SearchResult, find_clip, parse_query, search_by_clip


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Adds all four downstream-task sub-commands."""
    register_calibrate(subparsers)
    register_anomalies(subparsers)
    register_search(subparsers)
    register_probe(subparsers)


# --- calibrate / anomalies (EPG section 4.3) -----------------------------------------------------

def _add_score_options(parser: argparse.ArgumentParser, w_help: str, stds_help: str) -> None:
    parser.add_argument("--w", type=float, metavar="W", help=w_help)
    parser.add_argument("--stds", type=float, metavar="K", help=stds_help)


def register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "calibrate", _run_calibrate,
                         help="fit the anomaly threshold (mean + k std of d(z_v, z_a)) on training embeddings")
    add_embeddings(parser, "embeddings", "embeddings of the training clips of one model", metavar="TRAIN_EMB.npz")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help=f"calibration JSON to write, e.g. MODEL_DIR/{CALIBRATION}; an existing "
                        "file is overwritten (required)")
    _add_score_options(parser, f"Eq. 5 weight of squared Euclidean vs cosine distance, 0 to 1 (default {W})",
                       f"threshold = mean + K * std (default {ANOMALY_STDS})")


@reports_errors("calibrate")
def _run_calibrate(args: argparse.Namespace) -> int:
    """Score every training clip with audio by d(z_v, z_a) (EPG Eq. 5) and write the mean, std and threshold
    mean + k * std as a calibration file for `avsurv anomalies`."""
    embeddings = load_many(args.embeddings)
    calibration = calibrate(embeddings, w=W if args.w is None else args.w,
                            stds=ANOMALY_STDS if args.stds is None else args.stds)
    calibration.save(args.out)
    print(f"wrote {args.out}: {_describe(calibration)}; {len(embeddings) - calibration.clips} clips without "
          "audio ignored")
    return 0


def register_anomalies(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "anomalies", _run_anomalies,
                         help="find anomalous events: clips whose sound does not fit their picture")
    add_embeddings(parser, "embeddings", "embeddings to search for anomalies")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, metavar="DIR",
                        help=f"model directory with {CALIBRATION} (no default: this or --calibration)")
    source.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration file from `avsurv calibrate` (no default: this or --model)")
    parser.add_argument("--out", type=Path, metavar="EVENTS.jsonl",
                        help="write the events here as JSON lines (default: print them to stdout)")
    _add_score_options(parser, "Eq. 5 weight; must equal the calibration's, whose scores are on that scale "
                       "(default: the calibration's w)",
                       "threshold = mean + K * std of the calibration (default: the calibration's K, "
                       f"normally {ANOMALY_STDS})")


@reports_errors("anomalies")
def _run_anomalies(args: argparse.Namespace) -> int:
    """Score each clip with audio by d(z_v, z_a) (EPG Eq. 5), flag clips above the calibrated threshold and merge
    consecutive flagged seconds of one stream into events, printed as JSON lines. The summary goes to stderr when
    events go to stdout, so stdout stays JSON lines."""
    calibration = Calibration.load(args.model / CALIBRATION if args.model else args.calibration)
    if args.w is not None and not math.isclose(args.w, calibration.w):
        raise TaskError(f"--w {args.w} differs from the calibration's w {calibration.w}; "
                        "recalibrate with `avsurv calibrate --w`")
    if args.stds is not None:
        calibration = calibration.with_stds(args.stds)
    embeddings = load_many(args.embeddings)
    events = detect(embeddings, calibration)
    lines = "".join(json.dumps(event.to_dict()) + "\n" for event in events)
    if args.out:
        args.out.write_text(lines)
    else:
        sys.stdout.write(lines)
    flagged = sum(event.clips for event in events)
    ignored = int((~embeddings.has_audio).sum())
    summary = (f"{len(events)} events ({flagged} anomalous clips) among {len(embeddings) - ignored} clips "
               f"with audio; {ignored} clips without audio ignored; {_describe(calibration)}")
    print(summary + (f"; wrote {args.out}" if args.out else ""), file=sys.stdout if args.out else sys.stderr)
    return 0


def _describe(calibration: Calibration) -> str:
    return (f"threshold {calibration.threshold:.6g} = mean {calibration.mean:.6g} + {calibration.stds:g} x "
            f"std {calibration.std:.6g} over {calibration.clips} training clips, w {calibration.w:g}")


# --- search (EPG section 4.3) --------------------------------------------------------------------

def register_search(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "search", _run_search,
                         help="query by example: the clips nearest one clip, at least a minute apart")
    add_embeddings(parser, "--index", "embeddings to search", required=True)
    parser.add_argument("--query", required=True, metavar="CAMERA_OR_SOURCE@SECONDS",
                        help="the query clip: camera id or source, and a media time its clip holds, "
                        "e.g. cam0@125 (required)")
    add_embeddings(parser, "--query-index", "embeddings holding the query clip (default: the --index files)")
    parser.add_argument("--mode", choices=MODES, default="av",
                        help="av (mean of visual and audio distance), audio or visual (default av)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, metavar="K",
                        help=f"number of results (default {DEFAULT_TOP_K})")
    parser.add_argument("--exclusion", type=float, default=SEARCH_EXCLUSION_S, metavar="S",
                        help="drop results less than S seconds from the query, 0 disables "
                        f"(default {SEARCH_EXCLUSION_S:g})")
    parser.add_argument("--separation", type=float, default=SEARCH_SEPARATION_S, metavar="S",
                        help="keep a result only if S seconds or more from every better one, 0 disables "
                        f"(default {SEARCH_SEPARATION_S:g})")
    parser.add_argument("--w", type=float, default=W, metavar="W",
                        help=f"Eq. 5 weight of squared Euclidean vs cosine distance, 0 to 1 (default {W})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per result (default: a table)")


@reports_errors("search")
def _run_search(args: argparse.Namespace) -> int:
    """Rank the clips of the index by Eq. 5 distance to a query clip (visual, audio, or the mean of both), leaving
    out clips near the query and clips near a better-ranked result. Times compare by capture time when both clips
    have one, else by media time within one camera."""
    key, seconds = parse_query(args.query)
    index = load_many(args.index)
    queries = load_many(args.query_index) if args.query_index else index
    if queries.model_sha256 != index.model_sha256:
        raise TaskError("--query-index and --index come from different models")
    row = find_clip(queries, key, seconds)
    results = search_by_clip(index, queries, row, mode=args.mode, top_k=args.top_k,
                             exclusion_s=args.exclusion, separation_s=args.separation, w=args.w)
    if args.json:
        for result in results:
            print(json.dumps(result.to_dict()))
    else:
        print(f"query {queries.clip_id[row]} ({queries.camera_id[row]} at {queries.clip_start[row]:g} s), "
              f"mode {args.mode}: {len(results)} results")
        print(_table(results))
    return 0


def _table(results: list[SearchResult]) -> str:
    rows = [("rank", "camera", "time_s", "capture_time", "distance", "clip_id")]
    rows += [(str(r.rank), r.camera_id, f"{r.clip_start:.1f}", _utc(r.capture_time), f"{r.distance:.6g}",
              r.clip_id) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _utc(capture_time: float | None) -> str:
    if capture_time is None:
        return "-"
    return datetime.fromtimestamp(capture_time, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- probe (EPG section 4.2) ---------------------------------------------------------------------

def register_probe(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "probe", _run_probe,
                         help="linear evaluation: segment-wise accuracy of a linear classifier on frozen embeddings")
    add_embeddings(parser, "--train", "embeddings to train the classifier on", required=True)
    add_embeddings(parser, "--test", "embeddings to evaluate, each reported separately", required=True)
    parser.add_argument("--labels", type=Path, required=True, metavar="FILE",
                        help="ground_truth.json of `avsurv synth`, or a CSV with header camera_id,t,FIELD "
                        "(required)")
    parser.add_argument("--features", choices=(*FEATURES, "all"), default="av",
                        help="visual (z_v), audio (z_a), av ([z_v, z_a]) or all three in turn (default av)")
    own = ", ".join(f"{features} on {field}" for features, field in FEATURE_LABEL_FIELD.items())
    parser.add_argument("--label-field", choices=("auto", *LABEL_FIELDS), default="auto",
                        help="per-second field to train and score on; auto scores each feature set on what "
                        f"its modality perceives ({own}), or on a CSV's label column if it has no such "
                        "column (default auto)")
    parser.add_argument("--steps", "--epochs", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"L-BFGS iterations over the full training set (default {DEFAULT_STEPS})")
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY, metavar="L",
                        help=f"L2 penalty L/2 * ||W||^2 added to the loss (default {DEFAULT_WEIGHT_DECAY:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    parser.add_argument("--normalization", choices=(*NORMALIZATIONS, "both"), default="both",
                        help="paper: the training clips' scaler on every camera (EPG Table 1); per-camera: each "
                        "camera's embeddings first standardized with its own mean and std, no labels used; "
                        "both: side by side (default both)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per feature kind and normalization, with the confusion "
                        "matrix (default: text)")


@reports_errors("probe")
def _run_probe(args: argparse.Namespace) -> int:
    """Train a one-layer linear classifier (cross-entropy, standardised features, L2 weight decay, full-batch
    L-BFGS) on labelled clips of the --train embeddings and report the share of correctly classified clips of each
    --test set, per class, and the majority-class baseline."""
    fields = _label_fields(args)
    labels = {field: read_labels(args.labels, field) for field in dict.fromkeys(fields.values())}
    train = [EmbeddingSet.load(path) for path in args.train]
    test = {str(path): EmbeddingSet.load(path) for path in args.test}
    normalizations = NORMALIZATIONS if args.normalization == "both" else (args.normalization,)
    for features, field in fields.items():
        reports = [evaluate_probe(train, test, labels[field], features=features, steps=args.steps,
                                  weight_decay=args.weight_decay, seed=args.seed, normalization=normalization)
                   for normalization in normalizations]
        if args.json:
            print("\n".join(json.dumps(report.to_dict() | {"label_field": field}) for report in reports))
        else:
            print(_probe_text(reports, field))
    return 0


def _label_fields(args: argparse.Namespace) -> dict[str, str]:
    """features -> the per-second field its probe is trained and scored on."""
    chosen = FEATURES if args.features == "all" else (args.features,)
    if args.label_field != "auto":
        return dict.fromkeys(chosen, args.label_field)
    return {features: default_label_field(args.labels, features) for features in chosen}


def _probe_text(reports: Sequence[ProbeReport], label_field: str) -> str:
    """One block per feature kind; the accuracies of each normalization side by side, ``a | b``. The reports
    share their clips, labels and classes: only the normalization differs."""
    first = reports[0]
    per_class = [report.per_class() for report in reports]
    lines = [f"features {first.features}: trained on {first.train_clips} clips "
             f"({first.train_skipped} unlabelled skipped); labels: {label_field}; normalization "
             + " | ".join(report.normalization for report in reports)]
    lines += [f"  {s.name}: {_percents(report.sets[i].accuracy for report in reports)} of {s.clips} clips "
              f"({s.skipped} unlabelled skipped)" for i, s in enumerate(first.sets)]
    lines.append(f"  overall: {_percents(report.accuracy for report in reports)}; majority baseline "
                 f"({first.majority_class}): {_percent(first.majority_accuracy)}")
    lines += [f"    {name}: {_percents(shares[name][1] for shares in per_class)} of {clips}"
              for name, (clips, _) in per_class[0].items()]
    return "\n".join(lines)


def _percents(shares: Iterable[float]) -> str:
    return " | ".join(_percent(share) for share in shares)


def _percent(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{100 * share:.2f} %"
