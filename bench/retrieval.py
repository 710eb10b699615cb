"""Cross-modal retrieval after training: recall@1 and @5 of a clip's own audio among 100 candidates.

    python bench/retrieval.py --scene DIR [--methods epg tpg avbt infonce] [--epochs 5] [--profile tiny]
                              [--epg-switch aligned] [--max-positives 4] [--label-rule cross]

Trains each method on the scene's reference camera (``cam0``) with the same settings and seed, embeds
every camera, and prints recall@1 and recall@5 (chance 0.01 and 0.05) on the training camera and on each
other camera (same scene, other viewpoint and microphone), with the wall time of each training run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from avsurv.learning.embed import embed_inputs
from avsurv.learning.evaluate import cross_modal_recall
from avsurv.learning.losses import RULES
from avsurv.learning.modeldir import load_model
from avsurv.learning.train import EPG_SWITCHES, METHODS, TrainConfig, train
from avsurv.models import PROFILES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True, help="a directory written by avsurv synth")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to train")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--profile", default="tiny", choices=sorted(PROFILES), help="encoder profile (default tiny)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--epg-switch", default=TrainConfig.epg_switch, choices=EPG_SWITCHES,
                        help=f"EPG's switch from TPG labels (default {TrainConfig.epg_switch})")
    parser.add_argument("--max-positives", type=int, default=TrainConfig.max_positives,
                        help="EPG's cap of extra positives per anchor (default: the TrainConfig default)")
    parser.add_argument("--label-rule", default=TrainConfig.label_rule, choices=RULES,
                        help=f"EPG's pair-label rule (default {TrainConfig.label_rule})")
    args = parser.parse_args()
    cameras = json.loads((args.scene / "ground_truth.json").read_text())["cameras"]
    videos = {c["camera_id"]: args.scene / c["file"] for c in cameras}
    viewpoint = {c["camera_id"]: c["viewpoint"] for c in cameras}
    print(f"{'method':>8} {'train s':>8}  " + "  ".join(f"{c} ({viewpoint[c]}) R@1 R@5" for c in videos))
    for method in args.methods:
        with tempfile.TemporaryDirectory() as scratch:
            config = TrainConfig(profile=args.profile, method=method, epochs=args.epochs, seed=args.seed,
                                 epg_switch=args.epg_switch, max_positives=args.max_positives,
                                 label_rule=args.label_rule)
            started = time.perf_counter()
            train([videos["cam0"]], Path(scratch) / "model", config, progress=False, log=lambda _: None)
            seconds = time.perf_counter() - started
            model, model_config = load_model(Path(scratch) / "model")
            cells = []
            for video in videos.values():
                embeddings = embed_inputs(model, model_config, [video], progress=False)
                recall = cross_modal_recall(embeddings.z_v, embeddings.z_a, candidates=100, seed=args.seed)
                cells.append(f"{recall['recall_at_1']:.3f} {recall['recall_at_5']:.3f}")
        print(f"{method:>8} {seconds:>8.0f}  " + "  ".join(f"{cell:>24}" for cell in cells), flush=True)
    print("chance: R@1 0.010, R@5 0.050")


if __name__ == "__main__":
    main()
