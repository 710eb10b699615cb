"""Trainer: keeps learning on site. On request (control API) or every ``train_every_s`` seconds, once the
clip store holds ``train_min_clips`` clips, it trains a model (EPG by default) on the stored clips except
the most recent ``train_holdout`` share of each camera, compares it with the active model on those
held-back clips (cross-modal recall@5), and publishes it unless it is significantly worse (by more than
1.96 standard errors of the active model's recall on that many clips). The embedder then
indexes, calibrates and hot-swaps it. A round cancelled through the control API stops after its current
epoch, publishes nothing and leaves no scratch files; so does a round under way when the service is told to
stop (SIGINT, SIGTERM), within a batch.

A round holds at most ``train_max_clips`` clips in memory: it streams the store in working sets
(:class:`avsurv.learning.data.WorkingSets`) and evaluates on at most that many held-back clips. Beside the
rounds, a thread applies retention (:mod:`avsurv.platform.retention`) every ``retention_every_s`` when
``retention_days`` or ``retention_gb_per_camera`` is set: the trainer is the service that reads the whole
store anyway, and a pass must not wait for a round to end.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.bus import Bus
from avsurv.adapters.vectors import QdrantVectors, open_vectors
from avsurv.clipids import parse_clip_id
from avsurv.learning.data import ClipTable, WorkingSets, table_from_clips
from avsurv.learning.encode import encode_table
from avsurv.learning.evaluate import cross_modal_recall
from avsurv.learning.train import Stopped, TrainConfig, Trainer
from avsurv.media.background import BACKGROUND_FRAMES, BACKGROUND_STRIDE, Backgrounds
from avsurv.media.clipstore import ClipSource
from avsurv.models import AudioVisualModel
from avsurv.models.inputs import VisualInput
from avsurv.models.profiles import PROFILES
from avsurv.platform.archive import ClipArchive
from avsurv.platform.config import Settings
from avsurv.platform.model_versions import load_version, publish_model
from avsurv.platform.registry import Registry
from avsurv.platform.retention import Retention
from avsurv.platform.runtime import Ports, ServiceParts, open_server_vectors
from avsurv.platform.worker import Worker, log

EVAL_CANDIDATES = 100


class Cancelled(Exception):
    """The round was cancelled through the control API."""


def split_holdout(clip_ids: list[str], share: float) -> tuple[list[str], list[str]]:
    """Per camera, the most recent ``share`` of its clips is held back (ids are in capture order)."""
    train, held = [], []
    cameras = [parse_clip_id(clip_id)[0] for clip_id in clip_ids]
    for camera in dict.fromkeys(cameras):
        own = [c for c, of in zip(clip_ids, cameras, strict=True) if of == camera]
        cut = len(own) - max(1, round(len(own) * share))
        train += own[:cut]
        held += own[cut:]
    return train, held


WARMUP_CLIPS = BACKGROUND_FRAMES * BACKGROUND_STRIDE
"""Training clips per camera before its held-back ones that fill its background ring (they are not kept)."""


def evaluation_clips(train_ids: list[str], held_ids: list[str], most: int) -> tuple[list[str], list[str]]:
    """(warm-up ids, held-back ids to evaluate on): at most ``most`` held-back clips, evenly spaced in each
    camera's capture order, and the last :data:`WARMUP_CLIPS` training clips of each camera before them."""
    if len(held_ids) > most:
        held_ids = [held_ids[i] for i in np.linspace(0, len(held_ids) - 1, most).round().astype(int)]
    cameras = {parse_clip_id(clip_id)[0] for clip_id in held_ids}
    warmup = []
    for camera in cameras:
        warmup += [c for c in train_ids if parse_clip_id(c)[0] == camera][-WARMUP_CLIPS:]
    return warmup, held_ids


def held_back(source: ClipSource, warmup: list[str], held: list[str], visual: VisualInput) -> ClipTable:
    """The held-back clips as ``visual`` stores them, their backgrounds following from the warm-up clips
    (observed one at a time, not kept). Clips deleted since they were listed are left out: retention may run
    during a round."""
    backgrounds = Backgrounds()
    if visual.needs_background:
        for clip in source.clips(warmup, skip_missing=True):
            backgrounds.observe(clip.camera_id, visual.store(clip.frames))
    return table_from_clips(source.clips(held, skip_missing=True), visual, backgrounds, most=len(held))


def recall_at_5(model: AudioVisualModel, table: ClipTable) -> tuple[float, int]:
    """Cross-modal recall@5 on the held-back clips with audio, among up to 100 candidates, and how many clips
    it was measured on."""
    z_v, z_a = encode_table(model, table)
    keep = table.has_audio
    candidates = min(EVAL_CANDIDATES, int(keep.sum()))
    if candidates < 5:
        return 0.0, 0
    return cross_modal_recall(z_v[keep], z_a[keep], candidates=candidates)["recall_at_5"], int(keep.sum())


def significantly_worse(new: float, current: float, clips: int) -> bool:
    """Whether ``new`` recall is below ``current`` by more than 1.96 standard errors of a proportion
    measured on ``clips`` clips: on a few hundred held-back clips, smaller differences are noise."""
    spread = math.sqrt(max(current * (1 - current), 1e-4) / max(clips, 1))
    return new < current - 1.96 * spread


class TrainerService(Worker):
    name_ = "trainer"

    def __init__(self, bus: Bus, registry: Registry, artifacts: Artifacts, archive: ClipArchive,
                 settings: Settings, vectors: QdrantVectors | None = None) -> None:
        """``vectors``: where retention deletes the vectors of deleted clips (None: it deletes clips only)."""
        super().__init__()
        self.bus, self.registry, self.artifacts = bus, registry, artifacts
        self.archive, self.settings = archive, settings
        self.last_round = time.monotonic()
        self.rounds = 0
        self.retention = Retention(archive, vectors, registry, settings)
        self._retainer = threading.Thread(target=self._retain, name="retention", daemon=True)

    def run(self) -> None:
        if self.retention.enabled:
            self._retainer.start()
        super().run()

    def close(self) -> None:
        if self._retainer.is_alive():
            self._retainer.join()  # ``stopping`` is set: it ends after its current pass

    def _retain(self) -> None:
        while not self.stopping.is_set():
            try:
                self.retention.run()
            except Exception:  # a failed pass (the store unreachable) is retried at the next one
                log.exception("retention: pass failed")
            self.stopping.wait(self.settings.retention_every_s)

    def _status(self, state: str, detail: str = "", **extra: object) -> None:
        self.registry.set_trainer_status(state=state, detail=detail, clips_available=len(self.archive),
                                         last_version=self.registry.target_version() or "", **extra)
        log.info("trainer: %s %s", state, detail)

    def step(self) -> None:
        s = self.settings
        requested = self.registry.take_training_request()
        scheduled = s.train_every_s > 0 and time.monotonic() - self.last_round >= s.train_every_s
        if requested is None and not scheduled:
            self.stopping.wait(1.0)
            return
        self.last_round = time.monotonic()
        available = len(self.archive)
        if available < s.train_min_clips:
            self._status("collecting", f"{available} of {s.train_min_clips} clips needed for a round")
            return
        self.train_round(requested or s.train_epochs)

    def train_round(self, epochs: int) -> str | None:
        """One round; returns the published version, or None if the model was rejected, failed or was
        cancelled."""
        round_id = uuid.uuid4().hex
        self.registry.start_round(round_id)
        try:
            return self._train(epochs, round_id)
        except Cancelled as cancelled:
            self._status("cancelled", str(cancelled))
            return None
        except Stopped as stopped:  # the service is shutting down: end the round now, not after its epoch
            self._status("cancelled", f"the trainer shut down: {stopped}")
            return None
        finally:
            self.registry.end_round()

    def _checkpoint(self, round_id: str, epochs: int) -> Callable[[str], None]:
        """The training log: the trainer calls it after every epoch, where a cancelled round stops."""
        def log_epoch(line: str) -> None:
            log.info(line)
            if self.registry.round_cancelled(round_id):
                raise Cancelled(f"cancelled during a round of {epochs} epochs")
        return log_epoch

    def _train(self, epochs: int, round_id: str) -> str | None:
        s = self.settings
        train_ids, held_ids = split_holdout(self.archive.clip_ids(), s.train_holdout)
        self._status("training", f"{len(train_ids)} clips, {epochs} epochs of {s.train_method}"
                     f"{' with the views term' if s.train_views_weight else ''}")
        working_sets = WorkingSets(self.archive, train_ids, PROFILES[s.train_profile].input, s.train_max_clips,
                                   seed=self.rounds)
        warmup, evaluated = evaluation_clips(train_ids, held_ids, s.train_max_clips)
        scratch = Path(tempfile.mkdtemp(prefix="avsurv-train-", dir=s.data_dir))
        try:
            config = TrainConfig(profile=s.train_profile, method=s.train_method, epochs=epochs,
                                 seed=self.rounds, views_weight=s.train_views_weight, device=s.device,
                                 precision=s.precision)
            trainer = Trainer(working_sets, scratch / "model", config, progress=False,
                              log=self._checkpoint(round_id, epochs), stopping=self.stopping.is_set)
            trainer.run()
            self.rounds += 1
            model = trainer.model
            del trainer, working_sets  # the last working set goes before the held-back clips are read
            self._status("evaluating", f"{len(evaluated)} held-back clips")
            new, measured = recall_at_5(model, held_back(self.archive, warmup, evaluated, model.visual_input))
            active = self.registry.active_version()
            current = None
            if active:
                old = load_version(active, self.registry, self.artifacts, s.data_dir / "model-cache", s.device).model
                current = recall_at_5(old, held_back(self.archive, warmup, evaluated, old.visual_input))[0]
            metrics = {"heldout_recall_at_5": new, "heldout_clips": float(measured),
                       "train_clips": float(len(train_ids))}
            if current is not None and significantly_worse(new, current, measured):
                self._status("rejected", f"held-back recall@5 {new:.3f} is significantly below the active "
                             f"model's {current:.3f} ({measured} clips)")
                return None
            record = publish_model(scratch / "model", self.registry, self.artifacts, self.bus,
                                   parent=active or "", metrics=metrics)
            self._status("published", f"{record.version}: held-back recall@5 {new:.3f}"
                         + (f" (active {current:.3f})" if current is not None else ""))
            return record.version
        except (Cancelled, Stopped):
            raise
        except Exception as error:
            self._status("failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def build(ports: Ports, settings: Settings) -> ServiceParts:
    if (settings.retention_days or settings.retention_gb_per_camera) and ports.vectors is None:
        ports.vectors = open_server_vectors(settings) or open_vectors(settings.vectors_url)
    return ServiceParts(worker=TrainerService(ports.bus, ports.registry, ports.artifacts, ports.archive, settings,
                                              ports.vectors))
