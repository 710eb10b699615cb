"""WCCL: the weakly-supervised cross-modal contrastive loss of CCLN (Sun et al. 2025, Eq. 27)."""

import torch
import torch.nn.functional as F

WCCL_TEMPERATURE = 0.1
"""delta of Eq. 27; the paper gives no value. 0.1, a usual supervised-contrastive temperature."""


def wccl_loss(p_fusion: torch.Tensor, p_branch: torch.Tensor, labels: torch.Tensor,
              temperature: float = WCCL_TEMPERATURE) -> torch.Tensor:
    """Eq. 27 over the 2N predictions of a batch, mean over anchors:

    ``L = -1/|I| sum_i log( 1/|B(i)| sum_{p in B(i)} exp(P_i . P_p / delta) / sum_{a in A(i)} exp(P_i . P_a / delta) )``

    I holds the fusion-branch predictions P^f of the N videos and the visual-branch predictions P^v of the
    same videos (each [T], one score per segment), A(i) = I without i, and B(i) the members of A(i) with
    the video-level label of i; so P^f and P^v of one video are always positives of each other.
    Each prediction is L2-normalised first (the paper leaves P unnormalised, where exp(P_i . P_a / delta)
    overflows as predictions grow; supervised contrastive learning normalises). The paper sums over
    anchors; the mean keeps the loss weight eta independent of the batch size.

    Shapes: ``p_fusion`` [N, T], ``p_branch`` [N, T], ``labels`` int64 [N] -> scalar.
    """
    if p_fusion.ndim != 2 or p_fusion.shape != p_branch.shape or p_fusion.shape[0] == 0:
        raise ValueError(f"p_fusion and p_branch must both be [N >= 1, T], got {list(p_fusion.shape)} and "
                         f"{list(p_branch.shape)}")
    if labels.shape != p_fusion.shape[:1] or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 [{p_fusion.shape[0]}], got {labels.dtype} {list(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = F.normalize(torch.cat([p_fusion, p_branch]), dim=1)
    y = torch.cat([labels, labels])
    similarity = p @ p.T / temperature
    others = ~torch.eye(len(p), dtype=torch.bool, device=p.device)
    positives = others & (y[:, None] == y[None, :])
    exclude = torch.finfo(similarity.dtype).min
    log_positive_sum = torch.where(positives, similarity, exclude).logsumexp(dim=1)
    log_all_sum = torch.where(others, similarity, exclude).logsumexp(dim=1)
    log_mean_positive = log_positive_sum - positives.sum(dim=1).log()
    return -(log_mean_positive - log_all_sum).mean()
