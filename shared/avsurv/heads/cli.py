"""``avsurv heads train|eval|apply``: supervised heads on embedded clips.

Bad input prints ``avsurv heads <cmd>: error: <one line>`` to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from avsurv.clisupport import add_embeddings, reports_errors
from avsurv.errors import TaskError
from avsurv.heads.evaluate import HeadReport, SetResult, evaluate_head
from avsurv.heads.labels import BACKGROUND, read_anomaly_labels
from avsurv.heads.model import KINDS, LOCALIZATION_KINDS
from avsurv.heads.training import (
    DEFAULT_BATCH,
    DEFAULT_DROPOUT,
    DEFAULT_EPOCHS,
    DEFAULT_HIDDEN,
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    HeadSettings,
    TrainedHead,
    describe,
    train_head,
)
from avsurv.heads.windows import DEFAULT_WINDOW, MIN_WINDOW
from avsurv.labels import Labels, read_labels
from avsurv.learning.embeddings import EmbeddingSet, load_many
from avsurv.learning.modeldir import CONFIG


def register_cli(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds ``avsurv heads`` with its ``train``, ``eval`` and ``apply`` sub-commands; returns its sub-command
    action, to which the platform adds ``attach``, ``detach`` and ``attached``."""
    heads = subparsers.add_parser(
        "heads", help="supervised heads on embeddings: TACMA, CCLN (event localization), AVACA (anomalies)",
        description="Train, evaluate and apply heads over windows of consecutive embedded clips: TACMA and CCLN "
        "classify every clip of a window (event localization), AVACA scores every clip's anomaly.",
    )
    sub = heads.add_subparsers(dest="heads_command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_apply(sub)
    return sub


def _labels(kind: str, path: Path) -> Labels:
    """Class labels for the localization heads, anomaly labels for AVACA."""
    return read_labels(path) if kind in LOCALIZATION_KINDS else read_anomaly_labels(path)


# --- train ---------------------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a head on labelled embeddings and write it to a directory",
        description="Cut the embedded clips into windows of consecutive clips of one camera and train a head: "
        "tacma (segment labels), ccln (segment labels, or --supervision weak: only window-level labels, each "
        "class's share of the window and its most frequent event class) or avaca (a window is anomalous if any "
        "of its seconds is).",
    )
    p.add_argument("kind", choices=KINDS, help="the head to train")
    add_embeddings(p, "--train", "embeddings from `avsurv embed`", required=True)
    p.add_argument("--labels", type=Path, required=True, metavar="FILE",
                   help="ground_truth.json of `avsurv synth`, or a CSV: camera_id,t,label (tacma, ccln) or "
                   "camera_id,t,anomaly (avaca) (required)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="head directory to write (required)")
    p.add_argument("--supervision", choices=("full", "weak"),
                   help="full: a label per clip; weak: window-level labels only (default: full for tacma and ccln, "
                   "weak for avaca, the only setting each paper gives)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="T",
                   help=f"consecutive clips per window (default {DEFAULT_WINDOW})")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="B",
                   help=f"windows per batch (default {DEFAULT_BATCH})")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"AdamW learning rate (default {DEFAULT_LR:g})")
    p.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY,
                   help=f"AdamW weight decay (default {DEFAULT_WEIGHT_DECAY:g})")
    p.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN,
                   help=f"hidden size of the head, a multiple of 8 (default {DEFAULT_HIDDEN})")
    p.add_argument("--dropout", type=float, default=DEFAULT_DROPOUT, help=f"dropout (default {DEFAULT_DROPOUT:g})")
    p.add_argument("--background", default=BACKGROUND,
                   help=f"the label of seconds without an event, never a window's weak class (default {BACKGROUND})")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, dropout and batch order (default 0)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch, 0 = all cores; 1 is best on a loaded machine (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    p.set_defaults(func=_run_train)


@reports_errors("heads train")
def _run_train(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if (args.out / CONFIG).exists():
        raise TaskError(f"{args.out} already holds a model; remove it or choose another --out")
    settings = HeadSettings(kind=args.kind, supervision=args.supervision, window=args.window, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            hidden=args.hidden, dropout=args.dropout, seed=args.seed, background=args.background)
    labels = _labels(args.kind, args.labels)
    head = train_head(load_many(args.train), labels, settings, progress=not args.no_progress)
    checksum = head.save(args.out)
    print(f"wrote {args.out} (sha256 {checksum[:12]}...): {describe(head.config)}")
    return 0


# --- eval ----------------------------------------------------------------------------------------

def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="score a trained head on labelled embeddings",
        description="Segment-wise accuracy of a tacma or ccln head (with the majority-class baseline), or the "
        "ROC-AUC of an avaca head's per-clip anomaly scores, for each test set and all together.",
    )
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="head directory (required)")
    add_embeddings(p, "--test", "embeddings to score, each reported separately", required=True)
    p.add_argument("--labels", type=Path, required=True, metavar="FILE",
                   help="ground_truth.json or a CSV, as for train (required)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: text)")
    p.set_defaults(func=_run_eval)


@reports_errors("heads eval")
def _run_eval(args: argparse.Namespace) -> int:
    head = TrainedHead.load(args.model)
    labels = _labels(head.kind, args.labels)
    report = evaluate_head(head, {str(path): EmbeddingSet.load(path) for path in args.test}, labels)
    # A score over no clips reads like a result; usually the labels do not name the set's camera.
    empty = [f"{r.name} ({r.unlabelled} unlabelled, {r.uncovered} without a window)"
             for r in report.sets if not r.clips]
    if empty:
        raise TaskError(f"no clip scored in {', '.join(empty)}: check that {args.labels} labels the test cameras' "
                        f"seconds and that they have runs of {head.config['window']} consecutive clips")
    print(json.dumps(report.to_dict()) if args.json else _report_text(report))
    return 0


def _report_text(report: HeadReport) -> str:
    lines = [f"{report.kind}: {report.metric}"]
    lines += [_set_line(report, result) for result in (*report.sets, report.overall())]
    if report.majority_class is not None:
        lines.append(f"  majority baseline ({report.majority_class}): {_value(report.majority_accuracy())}")
    return "\n".join(lines)


def _set_line(report: HeadReport, result: SetResult) -> str:
    return (f"  {result.name}: {_value(report.score(result))} over {result.clips} clips ({result.unlabelled} "
            f"unlabelled, {result.uncovered} without a window)")


def _value(value: float) -> str:
    """n/a where undefined: no labelled clips, or (ROC-AUC) only one kind of anomaly label."""
    return "n/a" if math.isnan(value) else f"{value:.4f}"


# --- apply ---------------------------------------------------------------------------------------

def _add_apply(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply", help="predict every clip's class (tacma, ccln) or anomaly score (avaca)",
        description="One JSON line per clip: clip_id, camera_id, source, clip_start, label and score (the "
        "probability of the predicted class, or the anomaly score; avaca labels a clip anomaly at score >= 0.5).",
    )
    add_embeddings(p, "embeddings", "embeddings to label")
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="head directory (required)")
    p.add_argument("--out", type=Path, metavar="FILE.jsonl",
                   help="write the JSON lines here (default: print them to stdout)")
    p.set_defaults(func=_run_apply)


@reports_errors("heads apply")
def _run_apply(args: argparse.Namespace) -> int:
    head = TrainedHead.load(args.model)
    embeddings = load_many(args.embeddings)
    predictions = head.predict(embeddings)
    lines = "".join(json.dumps({
        "clip_id": str(embeddings.clip_id[row]), "camera_id": str(embeddings.camera_id[row]),
        "source": str(embeddings.source[row]), "clip_start": float(embeddings.clip_start[row]),
        "label": str(label), "score": float(score),
    }) + "\n" for row, label, score in zip(predictions.rows, predictions.labels, predictions.scores, strict=True))
    if args.out:
        args.out.write_text(lines)
    else:
        sys.stdout.write(lines)
    summary = (f"{head.kind}: {len(predictions.rows)} clips labelled, {predictions.uncovered} without a window "
               f"(in runs under {MIN_WINDOW} consecutive clips)")
    print(summary + (f"; wrote {args.out}" if args.out else ""), file=sys.stdout if args.out else sys.stderr)
    return 0

