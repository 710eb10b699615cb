"""Cross-modal retrieval: does a clip's video find its own audio among other clips' audio?

For each clip, the candidates are its own audio and ``candidates - 1`` audios of other clips drawn at
random; they are ranked by the EPG distance (Eq. 5) to the clip's visual embedding. Recall@k is the share
of clips whose own audio ranks in the top k; chance is k / candidates.
"""

from __future__ import annotations

import numpy as np
import torch

from avsurv.constants import W
from avsurv.learning.distance import distance


def cross_modal_recall(
    z_v: np.ndarray, z_a: np.ndarray, candidates: int = 100, ks: tuple[int, ...] = (1, 5), seed: int = 0,
    w: float = W,
) -> dict[str, float]:
    """Recall@k of the true audio for each clip's video, among ``candidates`` audios."""
    n = len(z_v)
    if n < candidates:
        raise ValueError(f"retrieval among {candidates} candidates needs at least {candidates} clips, got {n}")
    rng = np.random.default_rng(seed)
    # Distractors: a random draw from the other clips (shift indices past the anchor itself).
    others = rng.random((n, n - 1)).argsort(axis=1)[:, : candidates - 1]
    others = others + (others >= np.arange(n)[:, None])
    pool = np.concatenate([np.arange(n)[:, None], others], axis=1)  # column 0 is the true audio
    visual, audio = torch.from_numpy(z_v), torch.from_numpy(z_a)
    scores = distance(visual[:, None, :], audio[torch.from_numpy(pool)], w=w)  # [n, candidates]
    rank = (scores < scores[:, :1]).sum(dim=1).numpy()  # how many distractors beat the true audio
    result = {f"recall_at_{k}": float((rank < k).mean()) for k in ks}
    result |= {f"chance_at_{k}": k / candidates for k in ks}
    return result
