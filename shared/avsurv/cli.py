"""The ``avsurv`` command line: one sub-command per job; ``avsurv --help`` lists them."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from avsurv import __version__
from avsurv.clisupport import add_command
from avsurv.errors import MediaError, ModelError
from avsurv.heads import register_cli as register_heads
from avsurv.learning.cli import register_cli as register_learning
from avsurv.media import Segmenter, SegmentReport
from avsurv.media.clipstore import ClipWriter
from avsurv.media.privacy import CameraPrivacy, PrivacyError, load_privacy_file, privacy_filter
from avsurv.platform.cli import register_cli as register_platform
from avsurv.platform.demo import register_cli as register_demo
from avsurv.synth import register_cli as register_synth
from avsurv.tasks.cli import register_cli as register_tasks


def _epoch(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 time (UTC when no zone is given)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not epoch seconds nor an ISO 8601 time: {text!r}") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _privacy_file(text: str) -> dict[str, CameraPrivacy]:
    try:
        return load_privacy_file(text)
    except PrivacyError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def segment_source(
    source: str, camera_id: str | None, writer: ClipWriter | None, args: argparse.Namespace
) -> SegmentReport:
    """Segments one input into ``writer`` (or just counts), with a progress bar over media time."""
    bar = tqdm(unit="s", desc=camera_id or Path(source).stem, disable=args.no_progress, leave=False)

    def advance(media_time: float) -> None:
        bar.update(max(0.0, media_time - bar.n))

    segmenter = Segmenter(
        source, camera_id, capture_start=args.capture_start, max_seconds=args.max_seconds,
        timeout_s=args.timeout, threads=args.threads, on_progress=advance,
    )
    segmenter.privacy = privacy_filter(args.privacy, segmenter.camera_id)  # the camera's entry, as ingest reads it
    if args.privacy and segmenter.privacy is None:
        print(f"avsurv segment: warning: --privacy has no entry for camera {segmenter.camera_id!r} (nor '*'): its "
              "frames are stored unmasked", file=sys.stderr)
    try:
        for clip in segmenter:
            if bar.total is None and segmenter.report.info and segmenter.report.info.duration_s:
                bar.total = round(segmenter.report.info.duration_s, 1)
            if writer is not None:
                writer.add(clip)
    finally:
        bar.close()
    if writer is not None:
        writer.add_report(segmenter.report)
    return segmenter.report


def run_segment(args: argparse.Namespace) -> int:
    """Cut videos (mp4, mkv, webm, avi, ...) or network streams (rtsp://, http://) into 1-second clips: 5 frames at
    398x224 (two 224x224 crops) and a 128x64 log-mel of 44.1 kHz mono audio. Prints what was made and why any second
    was skipped."""
    if args.camera_id and len(args.inputs) > 1:
        print("avsurv segment: error: --camera-id names one input; drop it to name cameras after files",
              file=sys.stderr)
        return 2
    failed = 0
    existed = set(args.out.iterdir()) if args.out and args.out.is_dir() else None
    writer = ClipWriter(args.out) if args.out else None
    try:
        for source in args.inputs:
            try:
                report = segment_source(source, args.camera_id, writer, args)
            except MediaError as error:
                print(f"avsurv segment: error: {error}", file=sys.stderr)
                failed += 1
                continue
            print(json.dumps(report.to_dict(), default=str) if args.json else report.summary())
    finally:
        if writer is not None:
            writer.close()
    if writer is not None and failed:
        _remove_new(args.out, existed)
        print(f"avsurv segment: {failed} of {len(args.inputs)} inputs failed, so nothing was kept in {args.out}: "
              "fix them and run the same command again", file=sys.stderr)
    elif writer is not None:
        print(f"wrote {writer.count} clips to {args.out}")
    return 2 if failed else 0


def _remove_new(out: Path, existed: set[Path] | None) -> None:
    """Undoes a failed run's clip directory (its files, and the directory if the run made it): a half-written
    one would make the retry fail with "already holds clips"."""
    for path in set(out.iterdir()) - (existed or set()):
        path.unlink()
    if existed is None:
        out.rmdir()


def _add_segment(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "segment", run_segment,
                         help="cut videos or streams into the paper's 1-second audio-visual clips")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or stream URLs")
    parser.add_argument("--out", type=Path, help="write the clips to this new clip directory (default: only report)")
    parser.add_argument("--camera-id", help="camera id for a single input (default: the file name without extension)")
    parser.add_argument("--capture-start", type=_epoch, metavar="TIME",
                        help="capture time of media time 0, epoch seconds or ISO 8601; clips are cut on whole "
                        "seconds of it (default: the file's creation_time, the wall clock for streams, else none)")
    parser.add_argument("--max-seconds", type=float, metavar="S",
                        help="stop after S seconds of video, for live streams (default: read to the end)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for a network stream to open or send data (default: 10)")
    parser.add_argument("--threads", type=int, default=0,
                        help="video decoder threads, 0 lets FFmpeg choose (default: 0)")
    parser.add_argument("--privacy", type=_privacy_file, default={}, metavar="FILE",
                        help="YAML file (e.g. the platform's configuration) whose 'privacy' section masks and blurs "
                        "each camera's frames before they are stored, as the ingest service does")
    parser.add_argument("--json", action="store_true", help="print each input's report as one JSON line")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avsurv", description="Self-supervised audio-visual surveillance: clips, scenes and more."
    )
    parser.add_argument("--version", action="version", version=f"avsurv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    register_synth(sub)
    _add_segment(sub)
    register_learning(sub)
    register_tasks(sub)
    register_platform(sub, heads=register_heads(sub))
    register_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MediaError, ModelError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"avsurv {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
