"""Model versions: publishing a model directory into the artifact store and the registry, and loading a
version back (checksum verified against the registry, not only against the directory itself)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsurv.adapters.artifacts import Artifacts
from avsurv.adapters.bus import Bus
from avsurv.errors import ModelError
from avsurv.learning.calibration import Calibration
from avsurv.learning.embed import embed_clips
from avsurv.learning.modeldir import CALIBRATION, CHECKSUM, load_model, model_w, read_config
from avsurv.media.background import Backgrounds
from avsurv.media.segment import Clip
from avsurv.models import AudioVisualModel, inference_copy
from avsurv.models.device import resolve_device, resolve_precision
from avsurv.platform.messages import MODELS, header
from avsurv.platform.registry import ModelRecord, Registry
from avsurv.v1 import messages_pb2 as pb


@dataclass
class LoadedModel:
    version: str
    model: AudioVisualModel
    config: dict[str, Any]
    backgrounds: Backgrounds = field(default_factory=Backgrounds)
    """Each camera's background as the live stream has shown it to this model so far (the ``fg`` profile's
    input)."""
    precision: str = "auto"
    """auto, fp32 or bf16 (:func:`avsurv.models.device.resolve_precision`, on the model's device): the
    default is what the services embed with unless their ``precision`` setting says otherwise."""

    def __post_init__(self) -> None:
        self.model = inference_copy(self.model)  # only ever embeds: BatchNorms folded into their convolutions
        self.bf16 = resolve_precision(self.precision, next(self.model.parameters()).device, self.model.profile)

    @property
    def w(self) -> float:
        return model_w(self.config)

    @property
    def sha256(self) -> str:
        return str(self.config.get("sha256", ""))

    @property
    def profile(self) -> str:
        return str(self.config.get("profile", ""))

    def embed(self, clips: list[Clip], backgrounds: Backgrounds | None = None) -> tuple[np.ndarray, np.ndarray]:
        """float32 [N, 512] z_v (mean of the views) and z_a. The clips continue each camera's history in
        ``backgrounds``, by default the live stream's; a replay of stored clips or an uploaded query passes
        its own, so that it neither sees nor shifts the live one."""
        embeddings = embed_clips(self.model, {**self.config, "sha256": self.config.get("sha256", "")}, clips,
                                 batch_size=max(1, len(clips)),
                                 backgrounds=self.backgrounds if backgrounds is None else backgrounds, bf16=self.bf16)
        return embeddings.z_v, embeddings.z_a


def publish_model(directory: Path, registry: Registry, artifacts: Artifacts, bus: Bus | None, *,
                  parent: str = "", metrics: dict[str, float] | None = None) -> ModelRecord:
    """Stores a trained model directory as a new version and makes it the embedder's target."""
    config = read_config(directory)  # refuses a directory that is not a model
    w, profile = model_w(config), str(config.get("profile", ""))
    calibration = Calibration.load(directory / CALIBRATION).to_dict() if (directory / CALIBRATION).is_file() else None
    sha256 = _checksum(directory)
    for record in registry.models():
        if record.sha256 == sha256:
            return record  # the same weights again (a restarted trainer, or --model given twice)
    version = time.strftime("m%Y%m%dt%H%M%S", time.gmtime()) + f"-{sha256[:8]}"
    uri = artifacts.put(directory, version)
    record = ModelRecord(version=version, sha256=sha256, artifact_uri=uri, created_time=time.time(), w=w,
                         profile=profile, calibration=calibration, parent_version=parent, metrics=dict(metrics or {}))
    registry.add_model(record)
    registry.set_target(version)
    if bus is not None:
        update = pb.ModelUpdate(header=header(registry.site), model_version=version, sha256=sha256,
                                artifact_uri=uri, parent_version=parent, created_time=record.created_time,
                                metrics=record.metrics)
        bus.publish(MODELS, registry.site, update.SerializeToString())
        bus.flush()
    return record


def load_version(version: str, registry: Registry, artifacts: Artifacts, cache_dir: Path,
                 device: str = "auto", precision: str = "auto") -> LoadedModel:
    """Loads a registered version onto ``device`` to embed in ``precision`` (see :mod:`avsurv.models.device`);
    raises ModelError if it is unknown or its weights are not the ones registered."""
    record = registry.model(version)
    if record is None:
        raise ModelError(f"model version {version} is not registered")
    directory = artifacts.fetch(record.artifact_uri, cache_dir)
    model, config = load_model(directory)  # checks the weights against the directory's sha256
    if _checksum(directory) != record.sha256:
        raise ModelError(f"model version {version}: the artifact's weights are not the registered ones")
    return LoadedModel(version, model.to(resolve_device(device)), config, precision=precision)


def _checksum(directory: Path) -> str:
    try:
        return (directory / CHECKSUM).read_text().split()[0]
    except (OSError, IndexError):
        raise ModelError(f"{directory} has no readable {CHECKSUM}") from None
