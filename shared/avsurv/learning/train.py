"""Training the pseudo-Siamese encoders with EPG or a baseline (TPG, AV-BT, InfoNCE).

Schedule (EPG section 4.1, layer-wise / iterative training after Belilovsky et al. 2019): ``F_a`` is
first trained alone with ``F_v`` frozen for ``audio_epochs`` epochs, then the two are trained in
alternate epochs. While an encoder is frozen its outputs do not change, so they are computed once and
cached instead of being recomputed every batch. ``schedule="joint"`` trains both every step instead.
Decision: ``schedule="auto"`` (the default) is layer-wise when ``F_v`` starts from Kinetics weights, the
paper's setting, and joint from scratch: a randomly initialised ``F_v`` gives nearly the same embedding
for every clip, so training ``F_a`` against it first teaches nothing (measured: layer-wise TPG from
scratch had no aligned-vs-negative gap after 5 epochs, joint TPG had one from epoch 4).

EPG takes its pair labels from the embeddings (Eq. 1) except in the first ``tpg_epochs`` epochs, which
use temporal labels (only the synchronised pair is positive), as the paper does for its first epoch.
``epg_switch="aligned"`` (a documented option, PAPER_NOTES "Measured risks") also waits until an epoch
has ended with the encoders aligned, i.e. the batch's mean aligned distance at most ``switch_gap`` times
its mean negative distance: from scratch, one epoch leaves the space unaligned and Eq. 1 then labels
pairs little better than at random (measured: 43 positives per anchor, 7.8 % of them sharing their
ground-truth classes against 6.4 % of all pairs).
Every epoch logs the loss, positives per anchor and the alignment of the batch (in-batch recall@1 and
the gap between negative and aligned distances), since the loss value alone can hide a collapse
(PAPER_NOTES "Measured risks").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avsurv.constants import (
    CLIP_FRAMES_SHAPE,
    DEFAULT_PROFILE,
    DEVICES,
    EMBEDDING_DIM,
    LR_AUDIO,
    LR_VISUAL,
    MODALITIES,
    PRECISIONS,
    SIGMA,
    WEIGHT_DECAY,
    W,
)
from avsurv.errors import ModelError
from avsurv.labels import Labels, labels_at
from avsurv.learning import losses
from avsurv.learning.augment import sound_view
from avsurv.learning.data import (
    ClipTable,
    WorkingSets,
    audio_batch,
    load_clips,
    mel_statistics,
    summarize,
    video_batch,
)
from avsurv.learning.diagnostics import alignment_stats
from avsurv.learning.encode import encode_audio, encode_table, encode_visual_views
from avsurv.learning.modeldir import (
    CALIBRATION,
    CAMERA_STATS,
    CHECKPOINT,
    CONFIG,
    MODEL_FORMAT,
    load_checkpoint,
    save_checkpoint,
    save_model,
)
from avsurv.learning.normalization import SiteNormalization
from avsurv.learning.scores import fit_calibration
from avsurv.models import build_model, load_kinetics_x3d
from avsurv.models.device import autocast, resolve_device, resolve_precision
from avsurv.models.profiles import PROFILES

METHODS = ("epg", "tpg", "avbt", "infonce")
"""The self-supervised methods: EPG and its baselines."""
SUPERVISED = "supervised"
"""Trained end to end with event labels: the ceiling of the evaluation, not a method of the paper."""
SCHEDULES = ("auto", "layerwise", "joint")
EPG_SWITCHES = ("epoch", "aligned")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; defaults follow the paper where it gives a value."""

    profile: str = DEFAULT_PROFILE
    method: str = "epg"
    epochs: int = 5
    batch_size: int = 32
    """Not given in the paper. 32 rather than 64: on a 10-minute scene 5 epochs are only ~100 steps at 64;
    halving the batch lifted held-out recall@5 (TPG 0.14 -> 0.24, EPG 0.08 -> 0.12), while in-sample
    recall went down for EPG and InfoNCE (issue 3 notes)."""
    seed: int = 0
    w: float = W
    sigma: float = SIGMA
    tau: float = losses.DEFAULT_TAU
    reduction: str = "balanced"
    tpg_epochs: int = 1
    epg_switch: str = "epoch"
    """"epoch": EPG labels from epoch ``tpg_epochs`` on (paper); "aligned": also wait for alignment."""
    switch_gap: float = 0.5
    label_rule: str = "or"
    max_positives: int | None = None
    schedule: str = "auto"
    audio_epochs: int = 1
    lr_visual: float = LR_VISUAL
    lr_audio: float = LR_AUDIO
    weight_decay: float = WEIGHT_DECAY
    temperature: float = losses.INFONCE_TEMPERATURE
    avbt_lambda: float = losses.AVBT_LAMBDA
    avbt_window: int = 10
    views_weight: float = 0.0
    """Weight of the audio encoder's own views term (:mod:`avsurv.learning.losses.views`), added to the method's
    loss in every epoch that trains the audio encoder: two random views of each clip's log-mel embed alike.
    Not in the paper (0 trains the method as published); cross-modal labels teach only the sounds that are seen."""
    views_temperature: float = losses.VIEWS_TEMPERATURE
    kinetics_weights: str | None = None
    cache_frozen: bool = True
    """Compute a frozen encoder's outputs once per epoch instead of in every batch (same numbers, faster)."""
    precise_bn_clips: int = 1024
    """Clips used to recompute BatchNorm statistics after each epoch (0: keep the momentum estimates)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda; where the run happens, not what it learns (resume may change it)."""
    precision: str = "auto"
    """auto, fp32 or bf16 (:func:`avsurv.models.device.resolve_precision`): bf16 autocast of the encoders'
    forward passes, losses in float32. auto is bf16 for the ``fg`` profile on a CPU with Intel AMX (it trains
    2.3x faster there, with the same losses epoch by epoch to 1 %) and float32 otherwise (on an H200 bf16 made
    ``fg`` slower: 420 vs 543 clips/s); like the device, resume may change it. docs/RESULTS.md."""

    def __post_init__(self) -> None:
        checks = [
            (self.profile in PROFILES, f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}"),
            (self.method in (*METHODS, SUPERVISED),
             f"method must be one of {', '.join((*METHODS, SUPERVISED))}, got {self.method!r}"),
            (self.epg_switch in EPG_SWITCHES, f"epg switch must be one of {', '.join(EPG_SWITCHES)}, "
                                              f"got {self.epg_switch!r}"),
            (0.0 < self.switch_gap <= 1.0, f"switch gap must lie in (0, 1], got {self.switch_gap}"),
            (self.label_rule in losses.RULES, f"label rule must be one of {', '.join(losses.RULES)}, "
                                              f"got {self.label_rule!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.precise_bn_clips >= 0, f"precise BN clips must be >= 0, got {self.precise_bn_clips}"),
            (self.batch_size >= 2, f"batch size must be >= 2, got {self.batch_size}"),
            (self.tpg_epochs >= 0, f"tpg epochs must be >= 0, got {self.tpg_epochs}"),
            (self.audio_epochs >= 0, f"audio epochs must be >= 0, got {self.audio_epochs}"),
            (self.avbt_window >= 2, f"AV-BT window must be >= 2 clips, got {self.avbt_window}"),
            (self.views_weight >= 0, f"views weight must be >= 0, got {self.views_weight}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def resolved_schedule(self) -> str:
        if self.schedule != "auto":
            return self.schedule
        return "layerwise" if self.kinetics_weights else "joint"

    def trained_modalities(self, epoch: int) -> tuple[str, ...]:
        """Which encoders learn in ``epoch``: audio first, then alternating visual / audio."""
        if self.resolved_schedule == "joint":
            return MODALITIES
        if epoch < self.audio_epochs:
            return ("audio",)
        return ("visual",) if (epoch - self.audio_epochs) % 2 == 0 else ("audio",)


class Stopped(Exception):
    """The run was told to stop (see :class:`Trainer`'s ``stopping``) between two batches."""


@dataclass
class EpochStats:
    epoch: int
    trained: list[str]
    labels: str
    loss: float = 0.0
    positives_per_anchor: float = 0.0
    recall_at_1: float = 0.0
    aligned_distance: float = 0.0
    negative_distance: float = 0.0
    seconds: float = 0.0
    cache_seconds: float = 0.0
    bn_seconds: float = 0.0
    batches: int = 0
    views_loss: float = 0.0
    """Mean of the views term over the batches (0 when it is off); ``loss`` includes it, weighted."""

    def add(self, loss: float, positives: float, alignment: dict[str, float], views_loss: float = 0.0) -> None:
        n = self.batches
        self.loss = (self.loss * n + loss) / (n + 1)
        self.views_loss = (self.views_loss * n + views_loss) / (n + 1)
        self.positives_per_anchor = (self.positives_per_anchor * n + positives) / (n + 1)
        self.recall_at_1 = (self.recall_at_1 * n + alignment["recall_at_1"]) / (n + 1)
        self.aligned_distance = (self.aligned_distance * n + alignment["aligned_distance"]) / (n + 1)
        self.negative_distance = (self.negative_distance * n + alignment["negative_distance"]) / (n + 1)
        self.batches += 1

    def line(self) -> str:
        return (f"epoch {self.epoch + 1}: trained {'+'.join(self.trained)} with {self.labels} labels, "
                f"loss {self.loss:.4f}, positives/anchor {self.positives_per_anchor:.2f}, in-batch recall@1 "
                f"{self.recall_at_1:.3f}, distance aligned {self.aligned_distance:.3f} vs negative "
                f"{self.negative_distance:.3f}{f', views loss {self.views_loss:.4f}' if self.views_loss else ''}, "
                f"{self.seconds:.1f} s")


@dataclass
class TrainResult:
    directory: Path
    sha256: str
    history: list[EpochStats] = field(default_factory=list)


class _Objective:
    """The method's loss over one batch, returning (loss, positives per anchor)."""

    def __init__(self, config: TrainConfig, classes: int = 0) -> None:
        self.config = config
        self.contrastive = losses.MultiPositiveContrastiveLoss(tau=config.tau, w=config.w, reduction=config.reduction)
        self.infonce = losses.SymmetricInfoNCE(temperature=config.temperature)
        self.avbt = losses.AVBTLoss(lambda_=config.avbt_lambda) if config.method == "avbt" else None
        self.supervised = losses.SupervisedLoss(EMBEDDING_DIM, classes) if config.method == SUPERVISED else None
        self.views = losses.ViewsContrastiveLoss(config.views_temperature)

    @property
    def head(self) -> torch.nn.Module | None:
        """The loss's own trained parameters: AV-BT's projector or the supervised classifiers."""
        return self.avbt if self.avbt is not None else self.supervised

    def label_kind(self, epoch: int, history: Sequence[EpochStats]) -> str:
        """The labels of ``epoch``, given the epochs before it."""
        c = self.config
        if c.method != "epg":
            return {"tpg": "TPG", "avbt": "AV-BT", "infonce": "InfoNCE", SUPERVISED: "class"}[c.method]
        if epoch < c.tpg_epochs:
            return "TPG"
        if c.epg_switch == "epoch" or any(h.labels == "EPG" for h in history):
            return "EPG"
        last = history[-1] if history else None
        aligned = last is not None and last.aligned_distance <= c.switch_gap * last.negative_distance
        return "EPG" if aligned else "TPG"

    def __call__(
        self, z_v: torch.Tensor, z_a: torch.Tensor, times: torch.Tensor, targets: torch.Tensor, kind: str
    ) -> tuple[torch.Tensor, float]:
        """``targets``: AV-BT's video of each clip, or the supervised class of each clip."""
        c = self.config
        if kind == "InfoNCE":
            return self.infonce(z_v, z_a), 1.0
        if kind == "AV-BT":
            assert self.avbt is not None
            return self.avbt(z_a, z_v, targets), 1.0
        if kind == "class":
            assert self.supervised is not None
            return self.supervised(z_v, z_a, targets), 1.0
        if kind == "EPG":
            labels = losses.epg_labels(z_v, z_a, times, w=c.w, sigma=c.sigma, rule=c.label_rule,
                                       max_positives=c.max_positives)
        else:
            labels = losses.tpg_labels(times, sigma=c.sigma)
        return self.contrastive(z_v, z_a, labels), float(labels.float().sum(1).mean())


def _results_settings(config: dict[str, object]) -> dict[str, object]:
    """The settings a resumed run must share with its checkpoint: all but the device and the precision, which
    change where and how fast the run happens, not what it learns."""
    return {name: value for name, value in config.items() if name not in ("device", "precision")}


class Trainer:
    """One training run over a :class:`ClipTable` in memory or a store's clips in :class:`WorkingSets`,
    writing a model directory.

    With working sets, each epoch trains on one working set after the other (each clip once per crop pass, as
    in memory), the frozen encoder's outputs are cached per working set, the audio normalization and the
    precise BatchNorm statistics come from the first and the last working set (random samples of the
    clips), and the calibration embeds every clip in a last pass. When every clip fits in one working set,
    the run is the same as over a table of them."""

    def __init__(self, table: ClipTable | WorkingSets, out_dir: Path, config: TrainConfig, progress: bool = True,
                 log: Callable[[str], None] = print, labels: np.ndarray | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        """``labels``: str [len(table)], each clip's event class; needed by (and only by) the supervised method,
        which trains on the clips that have one (not ``""``). ``stopping``: asked before every batch; when it
        holds, the run raises :class:`Stopped` (a service shutting down must not wait for an epoch's end)."""
        if (config.method == SUPERVISED) != (labels is not None):
            raise ValueError("event labels are needed by the supervised method and only by it")
        self.source = table if isinstance(table, WorkingSets) else None
        self._part: np.ndarray | None = None
        if self.source is not None:
            if config.method in ("avbt", SUPERVISED):  # windows of consecutive clips, labels by position
                raise ValueError(f"the {config.method} method trains on a table in memory, not on working sets")
            self._part = self.source.plan(0)[0]
            table = self.source.load(self._part)
        keep = table.has_audio if labels is None else table.has_audio & (labels != "")
        self.table = _kept(table, keep)
        del table
        if len(self.table) < 2:
            raise ValueError(f"training needs at least 2 clips with audio (and a label), got {len(self.table)}")
        self.classes, targets = np.unique(labels[keep] if labels is not None else [], return_inverse=True)
        self.targets = torch.from_numpy(targets.astype(np.int64))
        self.out_dir, self.config, self.progress, self.log = Path(out_dir), config, progress, log
        self.stopping = stopping
        torch.manual_seed(config.seed)
        self.model = build_model(config.profile)
        visual = self.model.visual_input
        stored = visual.store(np.zeros((1, *CLIP_FRAMES_SHAPE), np.uint8)).shape[1:]
        if self.table.frames.shape[1:] != stored or (self.table.background is None) == visual.needs_background:
            raise ValueError(f"the clips were loaded for another profile than {config.profile!r}: "
                             f"load them with its input ({type(visual).__name__})")
        self.model.encoders["audio"].set_normalization(*mel_statistics(self.table.log_mel))
        if config.kinetics_weights:
            load_kinetics_x3d(self.model.encoders["visual"], config.kinetics_weights)
        self.device = resolve_device(config.device)
        self.bf16 = resolve_precision(config.precision, self.device, config.profile)
        self.model.to(self.device)
        self.objective = _Objective(config, len(self.classes))
        if self.objective.head is not None:
            self.objective.head.to(self.device)
        self.optimizers = self._optimizers()
        self.times = torch.from_numpy(self.table.times)
        self.cache: dict[str, torch.Tensor | None] = {"visual": None, "audio": None}
        self.history: list[EpochStats] = []
        self.views_rng = torch.Generator()

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        optimizers = {
            "visual": torch.optim.AdamW(self.model.encoders["visual"].parameters(), lr=c.lr_visual,
                                        weight_decay=c.weight_decay),
            "audio": torch.optim.AdamW(self.model.encoders["audio"].parameters(), lr=c.lr_audio,
                                       weight_decay=c.weight_decay),
        }
        if self.objective.head is not None:
            optimizers["head"] = torch.optim.AdamW(self.objective.head.parameters(), lr=c.lr_audio,
                                                   weight_decay=c.weight_decay)
        return optimizers

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules: dict[str, torch.nn.Module] = {"model": self.model}
        if self.objective.head is not None:
            modules["head"] = self.objective.head
        return modules

    # -- batches --------------------------------------------------------------------------------
    def _batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Index batches: a permutation of the whole stream, or whole windows of consecutive clips for
        AV-BT, whose loss correlates the clips of one video along time."""
        n, size = len(self.table), self.config.batch_size
        if self.config.method != "avbt":
            order = rng.permutation(n)
            for start in range(0, n - 1, size):
                batch = order[start : start + size]
                if len(batch) >= 2:
                    yield batch
            return
        windows = self._windows()
        per_batch = max(1, size // self.config.avbt_window)
        for start in range(0, len(windows), per_batch):
            chosen = [windows[i] for i in rng.permutation(len(windows))[start : start + per_batch]]
            yield np.concatenate(chosen)

    def _crop_passes(self, epoch: int, rng: np.random.Generator | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(clip indices, crop choice) per batch: two shuffled passes over the clips, each clip's crops in
        different passes (the crops are independent samples of one audio, EPG section 4.1), so no
        batch holds the same audio twice. ``rng``: the epoch's, drawn on from one working set to the next."""
        rng = np.random.default_rng([self.config.seed, epoch]) if rng is None else rng
        first = rng.integers(0, 2, len(self.table))
        return [(batch, crop[batch]) for crop in (first, 1 - first) for batch in self._batches(rng)]

    def _windows(self) -> list[np.ndarray]:
        window, windows = self.config.avbt_window, []
        for source in np.unique(self.table.source_index):
            clips = np.flatnonzero(self.table.source_index == source)
            clips = clips[np.argsort(self.table.starts[clips])]
            windows += [clips[i : i + window] for i in range(0, len(clips) - window + 1, window)]
        if not windows:
            raise ValueError(f"AV-BT needs videos of at least {window} clips")
        return windows

    def _targets(self, batch: np.ndarray) -> torch.Tensor:
        """The supervised classes of the batch, or for AV-BT the window (video) each clip belongs to."""
        if self.config.method == SUPERVISED:
            return self.targets[batch]
        return torch.from_numpy(np.repeat(np.arange(len(batch) // self.config.avbt_window + 1),
                                          self.config.avbt_window)[: len(batch)])

    # -- one epoch ------------------------------------------------------------------------------
    def _refresh_cache(self, frozen: Sequence[str]) -> float:
        started = time.perf_counter()
        self.model.eval()
        for modality in frozen:
            if self.cache[modality] is None:
                self.cache[modality] = (
                    encode_visual_views(self.model, self.table, bf16=self.bf16) if modality == "visual"
                    else encode_audio(self.model, self.table.log_mel, bf16=self.bf16)
                )
        return time.perf_counter() - started

    def _inputs(self, batch: np.ndarray, crops: np.ndarray, trained: Sequence[str]) -> dict[str, torch.Tensor]:
        """The encoders' inputs for a batch, on the CPU (pinned for a GPU), for each modality whose encoder
        runs on it (a frozen, cached one does not). Built in a background thread, one batch ahead."""
        inputs = {}
        for modality in MODALITIES:
            if modality not in trained and self.config.cache_frozen:
                continue
            tensor = (video_batch(self.table, batch, crops, self.model.visual_input) if modality == "visual"
                      else audio_batch(self.table.log_mel[batch]))
            inputs[modality] = tensor.pin_memory() if self.device.type == "cuda" else tensor
        return inputs

    def _embed_batch(self, modality: str, batch: np.ndarray, crops: np.ndarray, trained: Sequence[str],
                     prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's embeddings of ``modality``: from the cache when its encoder is frozen and cached, else
        from its encoder on the ``prepared`` inputs (already on the device)."""
        if modality not in trained and self.config.cache_frozen:
            cached = self.cache[modality]
            assert cached is not None
            return (cached[batch, crops] if modality == "visual" else cached[batch]).to(self.device)
        encoder, inputs = self.model.encoders[modality], prepared[modality]
        if modality in trained:
            return encoder(inputs)[modality]
        with torch.no_grad():
            return encoder(inputs)[modality]

    @torch.no_grad()
    def _precise_batch_norm(self, trained: Sequence[str]) -> float:
        """Recomputes the BatchNorm running statistics of the trained encoders with their final weights
        ("precise BN", as PySlowFast trains X3D). The momentum estimates lag the weights, and on fixed
        cameras many channels barely vary across clips, so eval-mode embeddings drifted far from what
        training optimised (measured: 37 % vs 94 % accuracy on the same clips before recomputing)."""
        started = time.perf_counter()
        clips = np.random.default_rng(self.config.seed).permutation(len(self.table))[: self.config.precise_bn_clips]
        for modality in trained:
            encoder = self.model.encoders[modality]
            norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            momenta = [norm.momentum for norm in norms]
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over the batches below
            encoder.train()
            for start in range(0, len(clips), self.config.batch_size):
                batch = clips[start : start + self.config.batch_size]
                if len(batch) < 2:
                    continue  # a lone clip has no batch statistics
                if modality == "visual":
                    inputs = video_batch(self.table, batch, np.arange(len(batch)) % 2, self.model.visual_input)
                else:
                    inputs = audio_batch(self.table.log_mel[batch])
                with autocast(self.device, self.bf16):  # the statistics of the activations training saw
                    encoder(inputs.to(self.device))
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
        return time.perf_counter() - started

    def _use(self, part: np.ndarray) -> None:
        """Makes working set ``part`` the table trained on, unless it is already."""
        assert self.source is not None
        if self._part is not None and np.array_equal(part, self._part):
            return
        del self.table  # the previous working set goes before the next is read: one in memory at a time
        self.cache = {"visual": None, "audio": None}
        loaded = self.source.load(part)
        self.table, self._part = _kept(loaded, loaded.has_audio), part
        self.times = torch.from_numpy(self.table.times)

    def run_epoch(self, epoch: int) -> EpochStats:
        trained = self.config.trained_modalities(epoch)
        stats = EpochStats(epoch, list(trained), self.objective.label_kind(epoch, self.history))
        started = time.perf_counter()
        rng = np.random.default_rng([self.config.seed, epoch])
        # Seeded apart from rng: drawing from it would change the batches of every run, views term or not.
        self.views_rng.manual_seed(self.config.seed * 1_000_003 + epoch)
        for part in [None] if self.source is None else self.source.plan(epoch):
            if part is not None:
                self._use(part)
            self._train_on_table(epoch, trained, stats, rng)
        stats.bn_seconds = self._precise_batch_norm(trained)
        for modality in trained:
            self.cache[modality] = None  # its outputs changed
        stats.seconds = time.perf_counter() - started
        return stats

    def _train_on_table(self, epoch: int, trained: Sequence[str], stats: EpochStats,
                        rng: np.random.Generator) -> None:
        """One epoch's batches over the table in memory (a working set's share of the epoch)."""
        if self.config.cache_frozen:
            stats.cache_seconds += self._refresh_cache([m for m in MODALITIES if m not in trained])
        for modality in MODALITIES:
            self.model.encoders[modality].train(modality in trained)
        if self.objective.head is not None:
            self.objective.head.train()
        passes = self._crop_passes(epoch, rng)
        bar = tqdm(passes, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.progress, leave=False)
        # One batch ahead: a thread builds the next batch's inputs (frames gathered, cropped or minus their
        # background, as float) while the model trains on this one. Leaving the block (the end, Stopped, an
        # error) waits for that one build only.
        with ThreadPoolExecutor(1, thread_name_prefix="train-inputs") as builder:
            upcoming: Future[dict[str, torch.Tensor]] | None = (
                builder.submit(self._inputs, *passes[0], trained) if passes else None)
            for index, (batch, crops) in enumerate(bar):
                if self.stopping():
                    raise Stopped(f"stopped during epoch {epoch + 1} of {self.config.epochs}")
                assert upcoming is not None
                prepared = upcoming.result()
                upcoming = builder.submit(self._inputs, *passes[index + 1], trained) if index + 1 < len(passes) \
                    else None
                self._train_step(batch, crops, trained, stats, prepared)
                bar.set_postfix(loss=f"{stats.loss:.4f}", pos=f"{stats.positives_per_anchor:.1f}",
                                r1=f"{stats.recall_at_1:.2f}")

    def _train_step(self, batch: np.ndarray, crops: np.ndarray, trained: Sequence[str], stats: EpochStats,
                    prepared: dict[str, torch.Tensor]) -> None:
        """One optimizer step on a batch whose inputs are ``prepared``."""
        # On the device once: the audio batch feeds both F_a's embedding and its views.
        prepared = {modality: tensor.to(self.device, non_blocking=True) for modality, tensor in prepared.items()}
        with autocast(self.device, self.bf16):
            z_v = self._embed_batch("visual", batch, crops, trained, prepared)
            z_a = self._embed_batch("audio", batch, crops, trained, prepared)
            views = self._views(prepared, trained)
        # Outside autocast and in float32: the losses' distances and labels are not bf16-safe.
        z_v, z_a = z_v.float(), z_a.float()
        loss, positives = self.objective(z_v, z_a, self.times[batch].to(self.device),
                                         self._targets(batch).to(self.device), stats.labels)
        views_loss = self.objective.views(*(z.float() for z in views)) if views else None
        if views_loss is not None:
            loss = loss + self.config.views_weight * views_loss
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for name in (*trained, "head"):
            if name in self.optimizers:
                self.optimizers[name].step()
        stats.add(loss.item(), positives, alignment_stats(z_v.detach(), z_a.detach(), w=self.config.w),
                  views_loss.item() if views_loss is not None else 0.0)

    def _views(self, prepared: dict[str, torch.Tensor], trained: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """The audio embeddings of two random views of the batch's log-mels, when the views term is on and the
        audio encoder trains this epoch; else nothing."""
        if self.config.views_weight == 0 or "audio" not in trained:
            return ()
        log_mel, encoder = prepared["audio"], self.model.encoders["audio"]
        return tuple(encoder(sound_view(log_mel, self.views_rng))["audio"] for _ in range(2))

    # -- the run --------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        start_epoch = 0
        if resume:
            progress = load_checkpoint(self.out_dir, self._modules(), self.optimizers)
            if _results_settings(progress["config"]) != _results_settings(asdict(self.config)):
                raise ModelError(f"{self.out_dir} was trained with other settings; resume with the same ones")
            start_epoch = progress["epoch"] + 1
            self.history = [EpochStats(**entry) for entry in progress["history"]]
            self.log(f"resuming after epoch {start_epoch} of {self.config.epochs}")
        for epoch in range(start_epoch, self.config.epochs):
            stats = self.run_epoch(epoch)
            self.history.append(stats)
            self.log(stats.line())
            save_checkpoint(self.out_dir, self._modules(), self.optimizers,
                            {"epoch": epoch, "config": asdict(self.config),
                             "history": [asdict(h) for h in self.history]})
        return self._finish()

    def _finish(self) -> TrainResult:
        self.model.eval()
        z_v, z_a, cameras, sources = self._embed_all()
        config = {
            "format": MODEL_FORMAT,
            "profile": self.config.profile,
            "method": self.config.method,
            "hyperparameters": asdict(self.config),
            "audio_normalization": {
                "mel_mean": self.model.encoders["audio"].mel_mean.tolist(),
                "mel_std": self.model.encoders["audio"].mel_std.tolist(),
            },
            "training_data": summarize(cameras, sources, len(cameras)),
            "classes": self.classes.tolist(),
            "history": [asdict(h) for h in self.history],
        }
        sha256 = save_model(self.model, self.out_dir, config)
        calibration = fit_calibration(z_v, z_a, w=self.config.w, model_sha256=sha256)
        calibration.save(self.out_dir / CALIBRATION)
        SiteNormalization.fit(cameras, z_v, z_a, model_sha256=sha256).save(self.out_dir / CAMERA_STATS)
        self.log(f"model {sha256[:12]} written to {self.out_dir}; anomaly threshold {calibration.threshold:.4f}")
        return TrainResult(self.out_dir, sha256, self.history)

    def _embed_all(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """z_v, z_a, camera and source of every training clip: the table in memory, or one working set at a time."""
        if self.source is None or self.source.fits:
            z_v, z_a = encode_table(self.model, self.table, bf16=self.bf16)
            return z_v, z_a, self.table.camera_ids, self.table.sources
        visual, audio, cameras, sources = [], [], [], []
        for part in self.source.plan(None):
            self._use(part)
            z_v, z_a = encode_table(self.model, self.table, bf16=self.bf16)
            visual.append(z_v)
            audio.append(z_a)
            cameras += self.table.camera_ids
            sources += self.table.sources
        return np.concatenate(visual), np.concatenate(audio), cameras, sources


def _kept(table: ClipTable, keep: np.ndarray) -> ClipTable:
    """``table``'s clips where ``keep`` holds: ``table`` itself when it keeps them all (no copy of its frames)."""
    return table if keep.all() else table.subset(keep)


def train(inputs: Sequence[str | Path], out_dir: str | Path, config: TrainConfig, *, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] = print, labels: Labels | None = None) -> TrainResult:
    """Loads every clip of ``inputs`` (videos, streams or clip directories) and trains one model; ``labels``
    (see :func:`avsurv.labels.read_labels`) only for the supervised method."""
    out_dir = Path(out_dir)
    if not resume and (out_dir / CONFIG).exists():
        raise FileExistsError(f"{out_dir} already holds a model; choose another --out or pass --resume")
    if resume and not (out_dir / CHECKPOINT / "state.json").is_file():
        raise FileNotFoundError(f"nothing to resume in {out_dir}: no checkpoint")
    resolve_device(config.device)  # refuse a missing GPU before loading every clip
    table = load_clips(inputs, progress, PROFILES[config.profile].input)
    per_clip = None if labels is None else labels_at(table.camera_ids, table.starts, labels)
    trainer = Trainer(table, out_dir, config, progress, log, labels=per_clip)
    log(f"training {config.method} ({config.profile} profile) on {len(table)} clips "
        f"({int(table.has_audio.sum())} with audio) from {len(set(table.sources))} input(s), "
        f"{trainer.device.type}, {'bf16' if trainer.bf16 else 'fp32'}")
    return trainer.run(resume=resume)
