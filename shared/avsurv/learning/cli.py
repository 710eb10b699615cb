"""The ``avsurv train`` and ``avsurv embed`` sub-commands."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from avsurv.clisupport import add_command
from avsurv.constants import DEVICES, PRECISIONS
from avsurv.labels import read_labels
from avsurv.learning.embed import embed_inputs
from avsurv.learning.losses.pairs import RULES
from avsurv.learning.modeldir import load_model
from avsurv.learning.train import EPG_SWITCHES, METHODS, SCHEDULES, SUPERVISED, TrainConfig, train
from avsurv.models import PROFILES
from avsurv.models.device import resolve_device, resolve_precision

_DEFAULT = TrainConfig()


def _set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def _interrupt(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_train(args: argparse.Namespace) -> int:
    """Train F_v and F_a on the clips of videos, streams or clip directories. Writes a model directory:
    model.safetensors, config.json, model.sha256, calibration.json (anomaly threshold on the training clips),
    camera_stats.json (per-camera embedding mean and variance) and checkpoint/ (the last epoch, for --resume)."""
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
        avbt_window=args.avbt_window, views_weight=args.views_weight,
        kinetics_weights=str(args.kinetics_weights) if args.kinetics_weights else None,
        device=args.device, precision=args.precision,
    )
    if (args.method == SUPERVISED) != (args.labels is not None):
        print(f"avsurv train: error: --labels is needed by --method {SUPERVISED} and only by it", file=sys.stderr)
        return 2
    labels = read_labels(args.labels) if args.labels else None
    train(args.inputs, args.out, config, resume=args.resume, progress=not args.no_progress, labels=labels)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = _DEFAULT
    p = add_command(sub, "train", run_train,
                    help="learn the audio and visual encoders from unlabelled video (EPG or a baseline)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, stream URLs or clip directories")
    p.add_argument("--out", type=Path, required=True, help="model directory to write (required)")
    option = _config_option(p)
    option("--profile", "encoders: fg (whole frames minus each camera's background; CPU), paper (X3D-M + ResNet18, "
           "as published) or tiny (X3D on pooled crops; CPU)", choices=sorted(PROFILES))
    option("--method", f"epg (the paper), or the baselines tpg, avbt, infonce; {SUPERVISED} trains with --labels "
           "(a ceiling for evaluations)", choices=(*METHODS, SUPERVISED))
    p.add_argument("--labels", type=Path,
                   help=f"{SUPERVISED} only: ground_truth.json or a camera_id,t,label CSV (as avsurv probe reads)")
    option("--epochs", "training epochs", type=int)
    option("--batch-size", "clips per batch, drawn across the whole stream", type=int)
    option("--seed", "random seed; runs are reproducible", type=int)
    option("--w", "Eq. 5 weight of the Euclidean term, 0..1", type=float)
    option("--sigma", "seconds within which clips are also positives", type=float)
    option("--tau", "margin of the Eq. 4 loss", type=float)
    option("--reduction", "how Eq. 4 terms are combined: balanced (mean over positives + mean over negatives), "
           "sum (the paper's plain Eq. 4) or mean over all pairs", choices=("balanced", "sum", "mean"))
    option("--tpg-epochs", "EPG only: first epochs with temporal (TPG) labels", type=int)
    option("--epg-switch", "EPG only: epoch = EPG labels right after --tpg-epochs (the paper); aligned = also wait "
           "until an epoch ends with the encoders aligned (see --switch-gap)", choices=EPG_SWITCHES)
    option("--switch-gap", "EPG with --epg-switch aligned: aligned when the mean aligned distance is at most this "
           "fraction of the mean negative distance", type=float)
    option("--label-rule", "EPG Eq. 1: a pair (video m, audio n) is positive if either (or) / both (and) same-modality "
           "distances of m and n are within m's aligned distance; cross: if the pair's own cross-modal distance is "
           "(the other reading of the paper's section 4.1)", choices=RULES)
    p.add_argument("--max-positives", type=int, default=d.max_positives,
                   help="EPG safeguard: keep at most this many nearest extra positives per anchor (default: no cap)")
    option("--schedule", "layerwise: F_a alone first, then alternate epochs (the paper); joint: both every step; "
           "auto: layerwise with --kinetics-weights, joint from scratch", choices=SCHEDULES)
    option("--audio-epochs", "layerwise: epochs training F_a alone with F_v frozen", type=int)
    option("--lr-visual", "F_v learning rate", type=float)
    option("--lr-audio", "F_a learning rate", type=float)
    option("--weight-decay", "weight decay of both encoders", type=float)
    option("--temperature", "InfoNCE temperature", type=float)
    option("--avbt-lambda", "AV-BT off-diagonal weight", type=float)
    option("--avbt-window", "AV-BT: consecutive clips forming one video", type=int)
    option("--views-weight", "weight of the audio encoder's own views term (two random views of each clip's sound "
           "embed alike), added to any method's loss; 0: the method alone, as published", type=float)
    p.add_argument("--kinetics-weights", type=Path,
                   help="start F_v from a local Kinetics-400 X3D-M file (.pyth or .safetensors; paper profile)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last saved epoch")
    _add_running(p, d.device, "; a resumed run may use another device and precision")


def _config_option(p: argparse.ArgumentParser) -> Callable[..., None]:
    """Adds an option whose default is the TrainConfig field of its name, stated at the end of its help."""
    def option(flag: str, help: str, **kwargs: Any) -> None:
        default = getattr(_DEFAULT, flag.removeprefix("--").replace("-", "_"))
        p.add_argument(flag, default=default, help=f"{help} (default {default})", **kwargs)
    return option


def _add_running(p: argparse.ArgumentParser, device: str, note: str = "") -> None:
    """Where and how visibly a command runs: device, CPU threads, progress bars."""
    p.add_argument("--device", default=device, choices=DEVICES,
                   help=f"auto: a CUDA GPU when torch sees one, else the CPU; cuda fails without one{note} "
                   f"(default {device})")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="bf16 autocasts the encoders (losses stay float32); auto: bf16 for the fg profile on a CPU "
                        "with Intel AMX, where it measured 2.3x faster to train, float32 elsewhere (default auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch, 0 = all cores (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_embed(args: argparse.Namespace) -> int:
    """Writes an .npz with, per clip: clip_start (float64 [N]), z_v and z_a (float32 [N, 512]; z_v is the mean over
    the two crops), clip_id, camera_id, capture_time, has_audio, source, and the model's sha256, profile and method."""
    _set_threads(args.threads)
    model, config = load_model(args.model)
    device = resolve_device(args.device)
    model.to(device)
    embeddings = embed_inputs(model, config, args.inputs, progress=not args.no_progress, batch_size=args.batch_size,
                              bf16=resolve_precision(args.precision, device, model.profile))
    embeddings.save(args.out)
    print(f"embedded {len(embeddings)} clips with model {config['sha256'][:12]} into {args.out}", file=sys.stderr)
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "embed", run_embed, help="embed every clip of videos or clip directories with a trained model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, stream URLs or clip directories")
    p.add_argument("--model", type=Path, required=True, help="model directory from avsurv train (required)")
    p.add_argument("--out", type=Path, required=True, help="embeddings file to write, .npz (required)")
    p.add_argument("--batch-size", type=int, default=32, help="clips per forward pass (default 32)")
    _add_running(p, "auto")


def register_cli(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_embed(sub)
