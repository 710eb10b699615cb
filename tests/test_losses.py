"""Pair labels, losses and diagnostics: vectorised code against loops written straight from the equations,
closed-form cases, argument validation and gradients."""

import math
from collections.abc import Iterator

import pytest
import torch

from avsurv.learning.diagnostics import alignment_stats
from avsurv.learning.distance import distance, pairwise_distance
from avsurv.learning.losses import (
    AVBTLoss,
    MultiPositiveContrastiveLoss,
    SupervisedLoss,
    SymmetricInfoNCE,
    ViewsContrastiveLoss,
    barlow_twins_objective,
    epg_labels,
    off_diagonal,
    per_video_cross_correlation,
    tpg_labels,
)


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    """float64 keeps the threshold comparisons of the matrix code and the loops on the same side."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def clustered_batch(batch: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips from 3 recurring 'events': same-event embeddings are close, so EPG labels are mixed."""
    generator = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(3, dim, generator=generator)
    event = torch.randint(0, 3, (batch,), generator=generator)
    z_v = centres[event] + 0.3 * torch.randn(batch, dim, generator=generator)
    z_a = z_v + 0.3 * torch.randn(batch, dim, generator=generator)
    times = 10.0 * torch.rand(batch, generator=generator)
    return z_v, z_a, times


# --- loops straight from the equations ----------------------------------------------------------
def tpg_loop(times: torch.Tensor, sigma: float) -> torch.Tensor:
    b = len(times)
    labels = torch.zeros(b, b, dtype=torch.bool)
    for m in range(b):
        for n in range(b):
            labels[m, n] = m == n or abs(float(times[m] - times[n])) < sigma
    return labels


def epg_loop(z_v, z_a, times, w, sigma, rule, max_positives) -> torch.Tensor:
    b = len(times)
    labels = torch.zeros(b, b, dtype=torch.bool)
    for m in range(b):
        delta = float(distance(z_v[m], z_a[m], w))
        candidates = []
        for n in range(b):
            if rule == "cross":
                d_cross = float(distance(z_v[m], z_a[n], w))
                near, nearness = d_cross <= delta, d_cross
            else:
                d_visual, d_audio = float(distance(z_v[m], z_v[n], w)), float(distance(z_a[m], z_a[n], w))
                near_v, near_a = d_visual <= delta, d_audio <= delta
                near, nearness = (near_v or near_a) if rule == "or" else (near_v and near_a), min(d_visual, d_audio)
            if n != m and near:
                candidates.append((nearness, n))
        kept = sorted(candidates) if max_positives is None else sorted(candidates)[:max_positives]
        for _, n in kept:
            labels[m, n] = True
        for n in range(b):
            if m == n or abs(float(times[m] - times[n])) < sigma:
                labels[m, n] = True
    return labels


def contrastive_loop(z_v, z_a, labels, tau, w, reduction) -> float:
    b = len(z_v)
    positive_sum = negative_sum = 0.0
    positives = negatives = 0
    for m in range(b):
        for n in range(b):
            d = float(distance(z_v[m], z_a[n], w))
            if labels[m, n]:
                positive_sum, positives = positive_sum + d**2, positives + 1
            else:
                negative_sum, negatives = negative_sum + max(tau - d, 0.0) ** 2, negatives + 1
    if reduction == "sum":
        return positive_sum + negative_sum
    if reduction == "mean":
        return (positive_sum + negative_sum) / b**2
    return positive_sum / max(positives, 1) + negative_sum / max(negatives, 1)


def correlation_loop(p_a: torch.Tensor, p_v: torch.Tensor) -> list[list[float]]:
    """C_ij = 1/T sum_t a_ti v_tj with each column standardised along t (population std + eps)."""
    t_count, dim = p_a.shape

    def standardized(p: torch.Tensor, t: int, i: int) -> float:
        column = [float(p[s, i]) for s in range(t_count)]
        mean = sum(column) / t_count
        variance = sum((x - mean) ** 2 for x in column) / t_count
        return (column[t] - mean) / math.sqrt(variance + 1e-5)

    return [
        [sum(standardized(p_a, t, i) * standardized(p_v, t, j) for t in range(t_count)) / t_count
         for j in range(dim)]
        for i in range(dim)
    ]


def barlow_loop(c: list[list[float]], lambda_: float) -> float:
    dim = len(c)
    return sum(
        (1 - c[i][j]) ** 2 if i == j else lambda_ * c[i][j] ** 2 for i in range(dim) for j in range(dim)
    )


def infonce_loop(z_v: torch.Tensor, z_a: torch.Tensor, temperature: float) -> float:
    b = len(z_v)
    s = [[float(torch.cosine_similarity(z_v[m], z_a[n], dim=0)) / temperature for n in range(b)]
         for m in range(b)]
    video_to_audio = -sum(s[m][m] - math.log(sum(math.exp(s[m][n]) for n in range(b))) for m in range(b)) / b
    audio_to_video = -sum(s[n][n] - math.log(sum(math.exp(s[m][n]) for m in range(b))) for n in range(b)) / b
    return (video_to_audio + audio_to_video) / 2


# --- pair labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.0, 2.5])
@pytest.mark.parametrize("batch", [1, 6, 13])
def test_tpg_labels_match_loop(batch: int, sigma: float) -> None:
    times = 10.0 * torch.rand(batch, generator=torch.Generator().manual_seed(batch))
    assert torch.equal(tpg_labels(times, sigma), tpg_loop(times, sigma))


def test_tpg_labels_sigma_zero_is_the_diagonal() -> None:
    times = torch.tensor([0.0, 0.0, 1.0])  # equal times are still negatives: |dt| < 0 never holds
    assert torch.equal(tpg_labels(times), torch.eye(3, dtype=torch.bool))


@pytest.mark.parametrize("max_positives", [None, 2])
@pytest.mark.parametrize("rule", ["or", "and", "cross"])
@pytest.mark.parametrize("sigma", [0.0, 2.5])
@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("batch", "dim"), [(1, 3), (7, 4), (16, 8)])
def test_epg_labels_match_loop(batch, dim, w, sigma, rule, max_positives) -> None:
    z_v, z_a, times = clustered_batch(batch, dim, seed=batch * dim)
    labels = epg_labels(z_v, z_a, times, w=w, sigma=sigma, rule=rule, max_positives=max_positives)
    assert labels.dtype == torch.bool
    assert torch.equal(labels, epg_loop(z_v, z_a, times, w, sigma, rule, max_positives))


def test_epg_fixture_gives_mixed_labels() -> None:
    """Guards the loop comparison above against degenerate all-diagonal or all-positive labels."""
    z_v, z_a, times = clustered_batch(16, 8, seed=128)
    per_anchor = epg_labels(z_v, z_a, times).sum(1)
    assert per_anchor.max() > 1
    assert per_anchor.min() < 16
    capped = epg_labels(z_v, z_a, times, max_positives=2).sum(1)
    assert capped.max() == 3  # the cap binds for some anchor: 2 kept + the diagonal
    crossed = epg_labels(z_v, z_a, times, rule="cross").sum(1)
    assert crossed.max() > 1 and crossed.min() < 16


def test_epg_labels_closed_form() -> None:
    z_v = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0]])
    z_a = z_v + torch.tensor([0.0, 0.5])  # delta_m = 0.25 with w = 1; clips 0 and 1 are 0.01 apart
    times = torch.tensor([0.0, 60.0, 120.0])
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert torch.equal(epg_labels(z_v, z_a, times, w=1.0), expected)
    assert torch.equal(epg_labels(z_v, z_a, times, w=1.0, max_positives=0), torch.eye(3, dtype=torch.bool))
    with_time = epg_labels(z_v, z_a, times, w=1.0, sigma=61.0, max_positives=0)
    assert torch.equal(with_time, torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool))


def test_epg_runaway_positives_and_the_cap() -> None:
    """docs/METHOD.md "Measured risks": unaligned encoders make every pair positive; the cap bounds it."""
    z_v, _, times = clustered_batch(12, 6, seed=1)
    z_a = z_v + 20.0  # cross-modal distances dwarf the same-modality ones
    assert bool(epg_labels(z_v, z_a, times).all())
    assert torch.equal(epg_labels(z_v, z_a, times, max_positives=2).sum(1), torch.full((12,), 3))


def test_labels_record_no_graph() -> None:
    z_v, z_a, times = clustered_batch(8, 4)
    z_v.requires_grad_(True)
    z_a.requires_grad_(True)
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        labels = epg_labels(z_v, z_a, times, max_positives=2)
    assert not labels.requires_grad
    assert saved == []  # no autograd node saved anything: the labels were computed under no_grad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"w": 1.5}, "w must lie in"),
        ({"sigma": -1.0}, "sigma must be >= 0"),
        ({"rule": "xor"}, "rule must be"),
        ({"max_positives": -1}, "max_positives must be"),
    ],
)
def test_epg_labels_reject_bad_settings(kwargs: dict, message: str) -> None:
    z_v, z_a, times = clustered_batch(4, 3)
    with pytest.raises(ValueError, match=message):
        epg_labels(z_v, z_a, times, **kwargs)


def test_label_functions_reject_bad_shapes() -> None:
    z_v, z_a, times = clustered_batch(4, 3)
    with pytest.raises(ValueError, match="z_v and z_a"):
        epg_labels(z_v, z_a[:3], times)
    with pytest.raises(ValueError, match=r"times must be .*\[4\]"):
        epg_labels(z_v, z_a, times[:3])
    with pytest.raises(ValueError, match="times must be"):
        tpg_labels(times[:, None])
    with pytest.raises(ValueError, match="sigma"):
        tpg_labels(times, -0.5)


# --- multi-positive contrastive loss (Eq. 4) ----------------------------------------------------
@pytest.mark.parametrize("reduction", ["balanced", "sum", "mean"])
@pytest.mark.parametrize("tau", [0.5, 3.0])
@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("batch", "dim"), [(1, 3), (6, 4), (12, 8)])
def test_contrastive_matches_loop(batch, dim, w, tau, reduction) -> None:
    z_v, z_a, times = clustered_batch(batch, dim, seed=batch + dim)
    z_v, z_a = 0.3 * z_v, 0.3 * z_a  # d of the same order as tau: both terms active
    labels = epg_labels(z_v, z_a, times, w=w)
    loss = MultiPositiveContrastiveLoss(tau=tau, w=w, reduction=reduction)(z_v, z_a, labels)
    assert float(loss) == pytest.approx(contrastive_loop(z_v, z_a, labels, tau, w, reduction), rel=1e-9)


@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_contrastive_loop_fixture_has_active_terms(tau: float) -> None:
    """Guards the loop comparison above: off-diagonal positives, and negatives inside the margin."""
    z_v, z_a, times = clustered_batch(12, 8, seed=20)
    z_v, z_a = 0.3 * z_v, 0.3 * z_a
    labels = epg_labels(z_v, z_a, times)
    d = pairwise_distance(z_v, z_a)
    assert int(labels.sum()) > 12
    assert bool((d[~labels] < tau).any())


@pytest.mark.parametrize("reduction", ["balanced", "sum", "mean"])
def test_contrastive_identical_embeddings_all_positive_is_zero(reduction: str) -> None:
    z = torch.ones(5, 4)
    loss = MultiPositiveContrastiveLoss(reduction=reduction)(z, z.clone(), torch.ones(5, 5, dtype=torch.bool))
    assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_contrastive_one_positive_and_no_negatives() -> None:
    """B = 1: one positive pair, no negatives (the balanced guard adds 0). d(e0, e1) = 0.5 * 2 + 0.5 * 1."""
    z_v, z_a = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    labels = torch.ones(1, 1, dtype=torch.bool)
    for reduction in ("balanced", "sum", "mean"):
        loss = MultiPositiveContrastiveLoss(reduction=reduction)(z_v, z_a, labels)
        assert float(loss) == pytest.approx(1.5**2)


def test_contrastive_orthogonal_negatives_closed_form() -> None:
    z = torch.eye(2)  # aligned pairs at d = 0, crossed pairs at d = 1.5
    labels = torch.eye(2, dtype=torch.bool)
    assert float(MultiPositiveContrastiveLoss(tau=1.0)(z, z, labels)) == 0.0  # beyond the margin
    expected = {"balanced": 0.25, "sum": 0.5, "mean": 0.125}  # each negative: (2 - 1.5)^2
    for reduction, value in expected.items():
        loss = MultiPositiveContrastiveLoss(tau=2.0, reduction=reduction)
        assert float(loss(z, z, labels)) == pytest.approx(value)


def test_contrastive_all_positives_is_mean_squared_distance() -> None:
    z_v, z_a, _ = clustered_batch(5, 3)
    all_positive = torch.ones(5, 5, dtype=torch.bool)
    d = torch.tensor([[float(distance(z_v[m], z_a[n])) for n in range(5)] for m in range(5)])
    loss = MultiPositiveContrastiveLoss()(z_v, z_a, all_positive)
    assert float(loss) == pytest.approx(float(d.pow(2).mean()), rel=1e-9)


def test_contrastive_balances_positives_against_many_negatives() -> None:
    z_v, z_a, times = clustered_batch(32, 4, seed=3)
    labels = tpg_labels(times)
    balanced = MultiPositiveContrastiveLoss()
    mean = MultiPositiveContrastiveLoss(reduction="mean")
    z_far = z_a + 1.0  # moves the positives; the balanced loss must react much more than the mean
    assert float(balanced(z_v, z_far, labels) - balanced(z_v, z_a, labels)) > 10 * float(
        mean(z_v, z_far, labels) - mean(z_v, z_a, labels)
    )


def test_contrastive_gradients_flow_to_both_modalities() -> None:
    z_v, z_a, times = clustered_batch(8, 4)
    z_v, z_a = (0.3 * z_v).requires_grad_(True), (0.3 * z_a).requires_grad_(True)
    MultiPositiveContrastiveLoss()(z_v, z_a, epg_labels(z_v, z_a, times)).backward()
    for grad in (z_v.grad, z_a.grad):
        assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tau": 0.0}, "tau must be > 0"), ({"w": -0.1}, "w must lie in"), ({"reduction": "max"}, "reduction")],
)
def test_contrastive_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiPositiveContrastiveLoss(**kwargs)


def test_contrastive_rejects_bad_shapes() -> None:
    loss, z = MultiPositiveContrastiveLoss(), torch.zeros(3, 4)
    with pytest.raises(ValueError, match="z_v and z_a"):
        loss(z, torch.zeros(3, 5), torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool \[3, 3\]"):
        loss(z, z, torch.eye(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool \[3, 3\]"):
        loss(z, z, torch.eye(3))


# --- AV-BT ---------------------------------------------------------------------------------------
def test_off_diagonal_matches_loop() -> None:
    x = torch.arange(2 * 4 * 4).reshape(2, 4, 4)
    expected = [[int(x[b, i, j]) for i in range(4) for j in range(4) if i != j] for b in range(2)]
    assert off_diagonal(x).tolist() == expected
    assert off_diagonal(x[0]).tolist() == expected[0]


@pytest.mark.parametrize("lambda_", [0.0, 5e-3, 1.0])
def test_barlow_objective_matches_loop(lambda_: float) -> None:
    c = torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    assert float(barlow_twins_objective(c, lambda_)) == pytest.approx(barlow_loop(c.tolist(), lambda_))


@pytest.mark.parametrize("clips_per_video", [[2], [3, 5], [4, 2, 6]])
def test_per_video_cross_correlation_matches_loop(clips_per_video: list[int]) -> None:
    generator = torch.Generator().manual_seed(sum(clips_per_video))
    batch, dim = sum(clips_per_video), 4
    p_a, p_v = torch.randn(batch, dim, generator=generator), torch.randn(batch, dim, generator=generator)
    ids = torch.tensor([7, 3, 9][: len(clips_per_video)])
    video_ids = torch.repeat_interleave(ids, torch.tensor(clips_per_video))
    shuffle = torch.randperm(batch, generator=generator)  # clips of one video need not be contiguous
    p_a, p_v, video_ids = p_a[shuffle], p_v[shuffle], video_ids[shuffle]
    c = per_video_cross_correlation(p_a, p_v, video_ids)
    for position, video in enumerate(sorted(set(video_ids.tolist()))):
        rows = video_ids == video
        expected = torch.tensor(correlation_loop(p_a[rows], p_v[rows]))
        torch.testing.assert_close(c[position], expected, rtol=1e-9, atol=1e-12)


def test_identical_decorrelated_inputs_give_identity() -> None:
    """Orthogonal zero-mean columns of norm sqrt(T): standardisation keeps them, C = I, loss = 0."""
    hadamard = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    p = hadamard[:, 1:]  # [T=4, D=3], zero-mean columns with unit population std
    c = per_video_cross_correlation(p, p.clone(), torch.zeros(4, dtype=torch.long))[0]
    torch.testing.assert_close(c, torch.eye(3), rtol=0, atol=1e-5)
    assert float(barlow_twins_objective(c)) == pytest.approx(0.0, abs=1e-9)


def test_identical_inputs_zero_invariance_term() -> None:
    p = torch.randn(6, 5, generator=torch.Generator().manual_seed(4))
    c = per_video_cross_correlation(p, p.clone(), torch.tensor([0, 0, 0, 1, 1, 1]))
    torch.testing.assert_close(torch.diagonal(c, dim1=-2, dim2=-1), torch.ones(2, 5), rtol=0, atol=1e-4)
    assert float(barlow_twins_objective(c.mean(0), lambda_=0.0)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("average", ["correlation", "loss"])
def test_avbt_loss_matches_loop_and_skips_single_clip_videos(average: str) -> None:
    generator = torch.Generator().manual_seed(5)
    loss = AVBTLoss(embedding_dim=6, projector_dims=(8, 8, 4), average=average)
    z_a, z_v = torch.randn(9, 6, generator=generator), torch.randn(9, 6, generator=generator)
    video_ids = torch.tensor([0, 0, 0, 0, 2, 1, 1, 1, 1])  # video 2 has one clip: skipped
    kept = video_ids != 2
    p_a, p_v = loss.projector(z_a[kept]).detach(), loss.projector(z_v[kept]).detach()
    correlations = [correlation_loop(p_a[video_ids[kept] == v], p_v[video_ids[kept] == v]) for v in (0, 1)]
    if average == "correlation":
        mean_c = [[(correlations[0][i][j] + correlations[1][i][j]) / 2 for j in range(4)] for i in range(4)]
        expected = barlow_loop(mean_c, 5e-3)
    else:
        expected = sum(barlow_loop(c, 5e-3) for c in correlations) / 2
    assert loss(z_a, z_v, video_ids).item() == pytest.approx(expected, rel=1e-9)


def test_avbt_projector_is_shared_and_gets_gradients() -> None:
    loss = AVBTLoss(embedding_dim=6, projector_dims=(8, 8, 4))
    assert [type(layer).__name__ for layer in loss.projector] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"
    ]
    z_a = torch.randn(8, 6, requires_grad=True)
    z_v = torch.randn(8, 6, requires_grad=True)
    loss(z_a, z_v, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])).backward()
    for grad in (z_a.grad, z_v.grad, *(p.grad for p in loss.parameters())):
        assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_avbt_default_sizes() -> None:
    sizes = [(m.in_features, m.out_features) for m in AVBTLoss().projector if isinstance(m, torch.nn.Linear)]
    assert sizes == [(512, 1024), (1024, 1024), (1024, 1024)]


def test_avbt_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="projector_dims"):
        AVBTLoss(projector_dims=(8, 8))
    with pytest.raises(ValueError, match="lambda_"):
        AVBTLoss(lambda_=-1.0)
    with pytest.raises(ValueError, match="average"):
        AVBTLoss(average="median")
    loss = AVBTLoss(embedding_dim=4, projector_dims=(4, 4, 4))
    with pytest.raises(ValueError, match="at least 2 clips"):
        loss(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="video_ids"):
        loss(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="at least 2 clips"):
        per_video_cross_correlation(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 0, 1]))


# --- symmetric InfoNCE ---------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize(("batch", "dim"), [(1, 3), (5, 4), (12, 8)])
def test_infonce_matches_loop(batch: int, dim: int, temperature: float) -> None:
    z_v, z_a, _ = clustered_batch(batch, dim, seed=dim)
    loss = SymmetricInfoNCE(temperature)(z_v, z_a)
    assert float(loss) == pytest.approx(infonce_loop(z_v, z_a, temperature), rel=1e-9)


def test_infonce_closed_forms() -> None:
    aligned = 3.0 * torch.eye(4, 6)  # one-hot-like, magnitude irrelevant after normalisation
    assert float(SymmetricInfoNCE(0.01)(aligned, aligned)) < 1e-12
    swapped = aligned[[1, 0, 2, 3]]
    # Clips 0 and 1: own logit 0, the other's 3 * 3 / 9 / 0.01 = 100, so 100 per row in both directions.
    assert float(SymmetricInfoNCE(0.01)(swapped, aligned)) == pytest.approx(50.0)
    identical = torch.ones(4, 6)  # no information: every logit equal, loss = log B
    assert float(SymmetricInfoNCE()(identical, identical)) == pytest.approx(math.log(4))


def test_infonce_gradients_and_validation() -> None:
    z_v, z_a = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    SymmetricInfoNCE()(z_v, z_a).backward()
    assert float(z_v.grad.abs().sum()) > 0 and float(z_a.grad.abs().sum()) > 0
    for temperature in (0.0, -0.07):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            SymmetricInfoNCE(temperature)
    with pytest.raises(ValueError, match="z_v and z_a"):
        SymmetricInfoNCE()(torch.zeros(3, 4), torch.zeros(4, 4))


# --- the audio encoder's views term (NT-Xent) ------------------------------------------------------------
def views_loop(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float) -> float:
    rows = [*z_1, *z_2]
    n, total = len(z_1), 0.0
    for i, row in enumerate(rows):
        s = [float(torch.cosine_similarity(row, other, dim=0)) / temperature for other in rows]
        twin = i + n if i < n else i - n
        total += -(s[twin] - math.log(sum(math.exp(s[j]) for j in range(2 * n) if j != i)))
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize(("batch", "dim"), [(2, 3), (5, 4), (12, 8)])
def test_views_loss_matches_loop(batch: int, dim: int, temperature: float) -> None:
    z_1, z_2, _ = clustered_batch(batch, dim, seed=dim)
    loss = ViewsContrastiveLoss(temperature)(z_1, z_2)
    assert float(loss) == pytest.approx(views_loop(z_1, z_2, temperature), rel=1e-9)


def test_views_loss_closed_forms_gradients_and_validation() -> None:
    assert float(ViewsContrastiveLoss(0.01)(3.0 * torch.eye(4, 6), torch.eye(4, 6))) < 1e-12
    identical = torch.ones(4, 6)  # every view alike: the twin is one of 2B - 1 equal candidates
    assert float(ViewsContrastiveLoss()(identical, identical)) == pytest.approx(math.log(7))
    z_1, z_2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    ViewsContrastiveLoss()(z_1, z_2).backward()
    assert float(z_1.grad.abs().sum()) > 0 and float(z_2.grad.abs().sum()) > 0
    for temperature in (0.0, -0.1):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            ViewsContrastiveLoss(temperature)
    for bad in ((torch.zeros(3, 4), torch.zeros(4, 4)), (torch.zeros(1, 4), torch.zeros(1, 4)),
                (torch.zeros(3), torch.zeros(3))):
        with pytest.raises(ValueError, match="z_1 and z_2"):
            ViewsContrastiveLoss()(*bad)


# --- supervised ceiling ----------------------------------------------------------------------------
def cross_entropy_loop(logits: torch.Tensor, targets: torch.Tensor) -> float:
    total = 0.0
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        total += math.log(sum(math.exp(x) for x in row)) - row[target]
    return total / len(targets)


def test_supervised_loss_matches_loop() -> None:
    torch.manual_seed(0)
    loss = SupervisedLoss(dim=4, classes=3)
    z_v, z_a, targets = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        logits = [loss.heads["visual"](z_v), loss.heads["audio"](z_a), loss.heads["av"](torch.cat([z_v, z_a], 1))]
    expected = sum(cross_entropy_loop(x, targets) for x in logits) / 3
    assert loss(z_v, z_a, targets).item() == pytest.approx(expected, rel=1e-9)


def test_supervised_loss_validation() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        SupervisedLoss(dim=4, classes=1)
    loss = SupervisedLoss(dim=4, classes=3)
    with pytest.raises(ValueError, match="targets must lie"):
        loss(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="targets must be int64"):
        loss(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0.0, 1.0]))


# --- diagnostics ---------------------------------------------------------------------------------
def test_alignment_stats_on_a_constructed_batch() -> None:
    z_v = torch.eye(4)
    z_a = z_v[[0, 1, 3, 2]]  # clips 2 and 3 got each other's audio
    labels = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    stats = alignment_stats(z_v, z_a, labels)
    # d(e_i, e_j) = 0.5 * 2 + 0.5 * 1 = 1.5 for i != j; aligned: 0, 0, 1.5, 1.5;
    # crossed: 10 pairs at 1.5 and (2, 3), (3, 2) at 0.
    assert stats == pytest.approx(
        {"recall_at_1": 0.5, "aligned_distance": 0.75, "negative_distance": 1.25, "gap": 0.5,
         "positives_per_anchor": 1.5}
    )
    assert set(alignment_stats(z_v, z_a)) == {"recall_at_1", "aligned_distance", "negative_distance", "gap"}


def test_alignment_stats_collapsed_space_has_no_recall() -> None:
    z = torch.ones(5, 3)
    stats = alignment_stats(z, z, w=1.0)
    assert stats["recall_at_1"] == 0.0
    assert stats["gap"] == pytest.approx(0.0, abs=1e-9)


def test_alignment_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="B >= 2"):
        alignment_stats(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"labels must be \[2, 2\]"):
        alignment_stats(torch.eye(2), torch.eye(2), torch.ones(3, 3, dtype=torch.bool))
