"""CCLN: cross-modal contrastive learning network (Sun et al. 2025, section IV, Eq. 1-35).

An event-localization head over the frozen features of one window of T segments, trained with segment
labels ("full") or with window-level labels only ("weak"):

- Fusion stage (Eq. 1-3): per modality a linear map to ``hidden``, a Bi-LSTM and self-attention give v^F
  and a^F. **AGVA (Eq. 1) is skipped**: audio-guided visual attention weighs the H x W cells of a
  spatial feature map, and the embeddings here are pooled 512-d vectors with no spatial cells.
- Interaction stage, SBI (Eq. 4-10): ``h^va = softmax(V_2 A_1^T / sqrt(d))`` (rows: visual segments),
  ``h^av = (h^va)^T``; the gate ``h(tau)`` (``sbi_gate``) drops attention below tau and renormalises;
  each gated matrix carries one modality's values onto the other's segments, and the results are added
  crosswise: ``v^I = v^F + gate(h^va) A_2``, ``a^I = a^F + gate(h^av) V_1``. (Eq. 7-8 print
  ``v^M = V_1 (x) h^va(tau)``, multiplying on the right of a column-major V_1; in row layout that is
  ``h^av V_1``, the visual values carried onto the audio segments, added to a^F by Eq. 10.)
- Integration stage, FEE (Eq. 11-20): ``v^Z = Ln(Fl(Sa(v^I)))`` (and a^Z), ``P^out = (v^Z + a^Z) / 2``,
  segment logits ``P^o = W_5 P^out`` [T, C+1], fusion prediction ``P^f = W_6 P^out`` [T], event logits
  ``P^fe = max_t W_7 P^out`` [C] over the C foreground classes, gated by
  ``v^e = sigmoid(mean(top-K_t(W_v v^I)))`` and a^e: ``P^e = P^fe * v^e * a^e``.
- Weak setting (Eq. 22-24): ``Theta = sigmoid(ReLU(W_b P_w))`` [T] and the window's logits
  ``P_weak = 1/T sum_t Theta_t P_w[t]`` (the paper writes ``P_w (x) Theta`` without saying how T is
  reduced; the mean keeps the scale of one segment's logits).
- Visual branch (Eq. 25): ``P^v = W_v' Ln(Fl(Sa(v^F)))`` [T], contrasted with P^f by WCCL (Eq. 27).

Losses: full (Eq. 31) ``focal(P^o, segment labels) + lambda CE(P^e, Y^e) + eta WCCL(P^f, P^v, y)``;
weak (Eq. 35) ``focal(P_weak, Y^weak) + lambda CE(P^e, Y^e) + eta WCCL(P^f, P^v, y)``. Y^weak is the
paper's video label, the segment labels average-pooled over the window (the share of each class, background
included; section IV-A). Y^e is the share of each foreground class among the window's foreground seconds
(in both settings a window-level quantity); windows without a foreground class add no FEE term. The WCCL
label y is the window's weak class (most frequent event class) in both settings, the paper's
"video-level event weak labels". Segments are predicted by argmax of P^o (full) or P_w (weak, the same
layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avsurv.constants import CCLN_TAU_FULL, CCLN_TAU_WEAK
from avsurv.heads.layers import BUILD_ORDER, Integration, SelfAttention
from avsurv.heads.losses import WCCL_TEMPERATURE, focal_loss, wccl_loss
from avsurv.heads.targets import IGNORE, Targets

SUPERVISIONS = ("full", "weak")
DEFAULT_HIDDEN = 128
"""d of the fusion features; the paper does not state it. Small for CPU."""
DEFAULT_TOP_K = 3
"""K of FEE's top-K (Eq. 18-19); the paper gives no value. 3 of T = 10 segments."""
DEFAULT_HEADS = 4
DEFAULT_LAMBDA = 1.0
DEFAULT_ETA = 1.0
"""Loss weights of Eq. 31/35. The paper's lambda = 150 and eta = 25 (``CCLN_LAMBDA``, ``CCLN_ETA``) let the
FEE and WCCL terms drown the focal loss on a few hundred windows trained for tens of epochs: on planted
events (tests/test_heads.py, 300 training clips, 40 epochs) segment accuracy was 0.75 with them and 0.96
with 1 and 1. Pass ``lambda_`` and ``eta`` for the paper's values."""


def sbi_gate(attention: torch.Tensor, tau: float) -> torch.Tensor:
    """h(tau) of Eq. 7-8: entries below tau set to 0, each row renormalised to sum 1 (rows left with no entry
    stay 0: that segment receives nothing from the other modality). Shapes: [..., T, T] -> same."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    kept = torch.where(attention >= tau, attention, torch.zeros_like(attention))
    total = kept.sum(dim=-1, keepdim=True)
    return kept / total.clamp_min(torch.finfo(attention.dtype).tiny)


class SBI(nn.Module):
    """Eq. 4-10: gated bi-modal attention, the result added crosswise to the other modality."""

    def __init__(self, dim: int, tau: float) -> None:
        super().__init__()
        self.tau, self.scale = tau, math.sqrt(dim)
        self.projections = nn.ModuleDict({name: nn.Linear(dim, dim) for name in ("v1", "v2", "a1", "a2")})

    def forward(self, v_f: torch.Tensor, a_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = {name: layer(v_f if name[0] == "v" else a_f) for name, layer in self.projections.items()}
        h_va = (p["v2"] @ p["a1"].transpose(1, 2) / self.scale).softmax(dim=-1)
        v_m = sbi_gate(h_va.transpose(1, 2), self.tau) @ p["v1"]  # visual values on the audio segments
        a_m = sbi_gate(h_va, self.tau) @ p["a2"]  # audio values on the visual segments
        return v_f + a_m, a_f + v_m


class CCLN(nn.Module):
    """``forward({"audio", "visual"} [B, T, D])`` returns ``{"visual": v^Z, "audio": a^Z`` [B, T, hidden],
    ``"logits": P^o`` [B, T, classes], ``"fusion": P^f``, ``"branch": P^v`` [B, T], ``"event": P^e``
    [B, foreground classes] and, when weak, ``"window": P_weak`` [B, classes]}."""

    def __init__(self, dim: int, classes: int, background: int | None, supervision: str = "full",
                 hidden: int = DEFAULT_HIDDEN, tau: float | None = None, top_k: int = DEFAULT_TOP_K,
                 heads: int = DEFAULT_HEADS, dropout: float = 0.1, lambda_: float = DEFAULT_LAMBDA,
                 eta: float = DEFAULT_ETA, temperature: float = WCCL_TEMPERATURE) -> None:
        super().__init__()
        if supervision not in SUPERVISIONS:
            raise ValueError(f"supervision must be one of {', '.join(SUPERVISIONS)}, got {supervision!r}")
        foreground = [c for c in range(classes) if c != background]
        if dim < 1 or hidden < 2 or hidden % 2 or hidden % heads or top_k < 1 or not foreground or classes < 2:
            raise ValueError(f"CCLN needs dim >= 1, an even hidden size divisible by heads, top_k >= 1 and at "
                             f"least one foreground class of >= 2; got {dim}, {hidden}, {heads}, {top_k}, "
                             f"{classes} classes with background {background}")
        if background is not None and not 0 <= background < classes:
            raise ValueError(f"background must index one of the {classes} classes, got {background}")
        if lambda_ < 0 or eta < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda {lambda_} and eta {eta}")
        self.supervision, self.top_k = supervision, top_k
        self.tau = (CCLN_TAU_FULL if supervision == "full" else CCLN_TAU_WEAK) if tau is None else tau
        self.lambda_, self.eta, self.temperature = lambda_, eta, temperature
        self.register_buffer("foreground", torch.tensor(foreground), persistent=False)
        self.embed = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
                                    for m in BUILD_ORDER})
        self.lstm = nn.ModuleDict({m: nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
                                   for m in BUILD_ORDER})
        self.fusion_attention = nn.ModuleDict({m: SelfAttention(hidden, heads, dropout) for m in BUILD_ORDER})
        self.sbi = SBI(hidden, self.tau)
        self.integration = nn.ModuleDict({m: Integration(hidden, heads, dropout) for m in BUILD_ORDER})
        self.segment_logits = nn.Linear(hidden, classes)  # W_5 (W_f5 or W_w5)
        self.fusion_score = nn.Linear(hidden, 1)  # W_6
        self.event_logits = nn.Linear(hidden, len(foreground))  # W_7
        self.event_gate = nn.ModuleDict({m: nn.Linear(hidden, len(foreground)) for m in BUILD_ORDER})
        self.window_weight = nn.Linear(classes, 1)  # W_b, weak only
        self.visual_branch = nn.Sequential(Integration(hidden, heads, dropout), nn.Linear(hidden, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        encoded = {m: self.lstm[m](self.embed[m](features[m]))[0] for m in BUILD_ORDER}
        fused = {m: self.fusion_attention[m](encoded[m]) for m in BUILD_ORDER}  # v^F, a^F
        v_i, a_i = self.sbi(fused["visual"], fused["audio"])
        v_z, a_z = self.integration["visual"](v_i), self.integration["audio"](a_i)
        p_out = (v_z + a_z) / 2
        k = min(self.top_k, p_out.shape[1])
        gates = [torch.sigmoid(self.event_gate[m](x).topk(k, dim=1).values.mean(dim=1))
                 for m, x in (("visual", v_i), ("audio", a_i))]
        outputs = {
            "visual": v_z, "audio": a_z,
            "logits": self.segment_logits(p_out),
            "fusion": self.fusion_score(p_out).squeeze(-1),
            "branch": self.visual_branch(fused["visual"]).squeeze(-1),
            "event": self.event_logits(p_out).max(dim=1).values * gates[0] * gates[1],
        }
        if self.supervision == "weak":
            theta = torch.sigmoid(F.relu(self.window_weight(outputs["logits"])))
            outputs["window"] = (theta * outputs["logits"]).mean(dim=1)
        return outputs

    def loss(self, outputs: dict[str, torch.Tensor], targets: Targets) -> dict[str, torch.Tensor]:
        """Eq. 31 (full) or Eq. 35 (weak); see the module docstring."""
        labelled = targets.windows != IGNORE
        if self.supervision == "full":
            segments = targets.segments != IGNORE
            one_hot = F.one_hot(targets.segments[segments], outputs["logits"].shape[-1]).to(torch.float32)
            focal = focal_loss(outputs["logits"][segments], one_hot)
        else:
            focal = focal_loss(outputs["window"][labelled], targets.shares[labelled])
        parts = {"focal": focal, "event": self._event_loss(outputs["event"], targets.shares),
                 "contrast": wccl_loss(outputs["fusion"][labelled], outputs["branch"][labelled],
                                       targets.windows[labelled], self.temperature)}
        parts["total"] = parts["focal"] + self.lambda_ * parts["event"] + self.eta * parts["contrast"]
        return parts

    def _event_loss(self, event_logits: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
        """Eq. 29/33: cross-entropy of P^e against Y^e, the shares of the foreground classes among the
        window's foreground seconds; mean over the windows that have any."""
        foreground = shares[:, self.foreground]
        has_event = foreground.sum(dim=1) > 0
        if not has_event.any():
            return event_logits.sum() * 0.0
        y_e = foreground[has_event] / foreground[has_event].sum(dim=1, keepdim=True)
        return -(y_e * event_logits[has_event].log_softmax(dim=1)).sum(dim=1).mean()

    def predict(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities [B, T, classes] of every segment (P^o, or P_w when weak)."""
        return outputs["logits"].softmax(dim=-1)
