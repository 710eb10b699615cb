"""The ``avsurv train`` and ``avsurv embed`` sub-commands."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import torch

from avsurv.constants import DEVICES
from avsurv.labels import read_labels
from avsurv.learning.embed import embed_inputs
from avsurv.learning.losses.pairs import RULES
from avsurv.learning.modeldir import load_model
from avsurv.learning.train import EPG_SWITCHES, METHODS, SCHEDULES, SUPERVISED, TrainConfig, train
from avsurv.models import PROFILES
from avsurv.models.device import resolve_device

_DEFAULT = TrainConfig()


def _set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def _interrupt(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_train(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    # SIGTERM (a container stopped, kill) ends a run as Ctrl-C does: "interrupted", exit 130, the last
    # epoch's checkpoint kept for --resume.
    signal.signal(signal.SIGTERM, _interrupt)
    config = TrainConfig(
        profile=args.profile, method=args.method, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        w=args.w, sigma=args.sigma, tau=args.tau, reduction=args.reduction, tpg_epochs=args.tpg_epochs,
        epg_switch=args.epg_switch, switch_gap=args.switch_gap,
        label_rule=args.label_rule, max_positives=args.max_positives, schedule=args.schedule,
        audio_epochs=args.audio_epochs, lr_visual=args.lr_visual, lr_audio=args.lr_audio,
        weight_decay=args.weight_decay, temperature=args.temperature, avbt_lambda=args.avbt_lambda,
        avbt_window=args.avbt_window, kinetics_weights=str(args.kinetics_weights) if args.kinetics_weights else None,
        device=args.device, bf16=args.bf16,
    )
    if (args.method == SUPERVISED) != (args.labels is not None):
        print(f"avsurv train: error: --labels is needed by --method {SUPERVISED} and only by it", file=sys.stderr)
        return 2
    labels = read_labels(args.labels) if args.labels else None
    train(args.inputs, args.out, config, resume=args.resume, progress=not args.no_progress, labels=labels)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = _DEFAULT
    p = sub.add_parser(
        "train", help="learn the audio and visual encoders from unlabelled video (EPG or a baseline)",
        description="Train F_v and F_a on the clips of videos, streams or clip directories. Writes a model "
        "directory: model.safetensors, config.json, model.sha256, calibration.json (anomaly threshold on the "
        "training clips), camera_stats.json (per-camera embedding mean and variance) and checkpoint/ (the last "
        "epoch, for --resume).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, stream URLs or clip directories")
    p.add_argument("--out", type=Path, required=True, help="model directory to write (required)")
    p.add_argument("--profile", default=d.profile, choices=sorted(PROFILES),
                   help="encoders: fg (whole frames minus each camera's background; CPU), paper (X3D-M + ResNet18, "
                        f"as published) or tiny (X3D on pooled crops; CPU) (default {d.profile})")
    p.add_argument("--method", default=d.method, choices=(*METHODS, SUPERVISED),
                   help=f"epg (the paper), or the baselines tpg, avbt, infonce; {SUPERVISED} trains with --labels "
                   f"(a ceiling for evaluations) (default {d.method})")
    p.add_argument("--labels", type=Path,
                   help=f"{SUPERVISED} only: ground_truth.json or a camera_id,t,label CSV (as avsurv probe reads)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"clips per batch, drawn across the whole stream (default {d.batch_size})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed; runs are reproducible (default {d.seed})")
    p.add_argument("--w", type=float, default=d.w, help=f"Eq. 5 weight of the Euclidean term, 0..1 (default {d.w})")
    p.add_argument("--sigma", type=float, default=d.sigma,
                   help=f"seconds within which clips are also positives (default {d.sigma})")
    p.add_argument("--tau", type=float, default=d.tau, help=f"margin of the Eq. 4 loss (default {d.tau})")
    p.add_argument("--reduction", default=d.reduction, choices=("balanced", "sum", "mean"),
                   help="how Eq. 4 terms are combined: balanced (mean over positives + mean over negatives), "
                   f"sum (the paper's plain Eq. 4) or mean over all pairs (default {d.reduction})")
    p.add_argument("--tpg-epochs", type=int, default=d.tpg_epochs,
                   help=f"EPG only: first epochs with temporal (TPG) labels (default {d.tpg_epochs})")
    p.add_argument("--epg-switch", default=d.epg_switch, choices=EPG_SWITCHES,
                   help="EPG only: epoch = EPG labels right after --tpg-epochs (the paper); aligned = also wait "
                   f"until an epoch ends with the encoders aligned (see --switch-gap) (default {d.epg_switch})")
    p.add_argument("--switch-gap", type=float, default=d.switch_gap,
                   help="EPG with --epg-switch aligned: aligned when the mean aligned distance is at most this "
                   f"fraction of the mean negative distance (default {d.switch_gap})")
    p.add_argument("--label-rule", default=d.label_rule, choices=RULES,
                   help="EPG Eq. 1: a pair (video m, audio n) is positive if either (or) / both (and) same-modality "
                   "distances of m and n are within m's aligned distance; cross: if the pair's own cross-modal "
                   f"distance is (the other reading of the paper's section 4.1) (default {d.label_rule})")
    p.add_argument("--max-positives", type=int, default=d.max_positives,
                   help="EPG safeguard: keep at most this many nearest extra positives per anchor (default: no cap)")
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES,
                   help="layerwise: F_a alone first, then alternate epochs (the paper); joint: both every step; "
                   f"auto: layerwise with --kinetics-weights, joint from scratch (default {d.schedule})")
    p.add_argument("--audio-epochs", type=int, default=d.audio_epochs,
                   help=f"layerwise: epochs training F_a alone with F_v frozen (default {d.audio_epochs})")
    p.add_argument("--lr-visual", type=float, default=d.lr_visual, help=f"F_v learning rate (default {d.lr_visual})")
    p.add_argument("--lr-audio", type=float, default=d.lr_audio, help=f"F_a learning rate (default {d.lr_audio})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"weight decay of both encoders (default {d.weight_decay})")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"InfoNCE temperature (default {d.temperature})")
    p.add_argument("--avbt-lambda", type=float, default=d.avbt_lambda,
                   help=f"AV-BT off-diagonal weight (default {d.avbt_lambda})")
    p.add_argument("--avbt-window", type=int, default=d.avbt_window,
                   help=f"AV-BT: consecutive clips forming one video (default {d.avbt_window})")
    p.add_argument("--kinetics-weights", type=Path,
                   help="start F_v from a local Kinetics-400 X3D-M file (.pyth or .safetensors; paper profile)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last saved epoch")
    p.add_argument("--bf16", action="store_true",
                   help="on CUDA, run the encoders under bf16 autocast (measured slower for fg on an H200; the CPU "
                        "never uses bf16)")
    _add_running(p, d.device, "; a resumed run may use another device")
    p.set_defaults(func=run_train)


def _add_running(p: argparse.ArgumentParser, device: str, note: str = "") -> None:
    """Where and how visibly a command runs: device, CPU threads, progress bars."""
    p.add_argument("--device", default=device, choices=DEVICES,
                   help=f"auto: a CUDA GPU when torch sees one, else the CPU; cuda fails without one{note} "
                   f"(default {device})")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch, 0 = all cores (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_embed(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    model, config = load_model(args.model)
    model.to(resolve_device(args.device))
    embeddings = embed_inputs(model, config, args.inputs, progress=not args.no_progress, batch_size=args.batch_size)
    embeddings.save(args.out)
    print(f"embedded {len(embeddings)} clips with model {config['sha256'][:12]} into {args.out}", file=sys.stderr)
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="embed every clip of videos or clip directories with a trained model",
        description="Writes an .npz with, per clip: clip_start (float64 [N]), z_v and z_a (float32 [N, 512]; "
        "z_v is the mean over the two crops), clip_id, camera_id, capture_time, has_audio, source, and the "
        "model's sha256, profile and method.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, stream URLs or clip directories")
    p.add_argument("--model", type=Path, required=True, help="model directory from avsurv train (required)")
    p.add_argument("--out", type=Path, required=True, help="embeddings file to write, .npz (required)")
    p.add_argument("--batch-size", type=int, default=32, help="clips per forward pass (default 32)")
    _add_running(p, "auto")
    p.set_defaults(func=run_embed)


def register_cli(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_embed(sub)
