"""Heads attached to cameras: a trained head (``avsurv heads train``) watches one camera's embeddings in
the anomaly detector, and the clips it labels with one of its attachment's ``labels`` become events on
the anomalies topic (``AnomalyEvent.detector`` "head:<kind>:<name>", ``label`` the head's label).

A head reads the embeddings of the model it was trained on only (its config names that model's sha256):
while the camera's clips are embedded by another model version, the head is idle. Retrain it on the new
version's embeddings and attach it again under the same name to follow a new model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from avsurv.adapters.artifacts import Artifacts
from avsurv.errors import ModelError
from avsurv.heads.labels import ANOMALY
from avsurv.heads.model import LOCALIZATION_KINDS
from avsurv.heads.training import TrainedHead
from avsurv.platform.registry import HeadRecord, Registry

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
HEADS_REFRESH_S = 5.0
"""How often the anomaly detector reads the heads attached to cameras from the registry."""


def event_labels(head: TrainedHead, labels: Sequence[str] | None) -> list[str]:
    """The head labels that make events: AVACA's ``anomaly``; for TACMA and CCLN ``labels``, by default
    every class except the background."""
    if head.kind not in LOCALIZATION_KINDS:
        if labels and list(labels) != [ANOMALY]:
            raise ModelError(f"an {head.kind} head reports {ANOMALY!r} clips only, not {list(labels)}")
        return [ANOMALY]
    if not labels:
        background = head.config["settings"]["background"]
        return [c for c in head.classes if c != background]
    unknown = sorted(set(labels) - set(head.classes))
    if unknown:
        raise ModelError(f"the {head.kind} head has no class {unknown}; its classes are {list(head.classes)}")
    return sorted(set(labels))


def attach_head(directory: Path, camera_id: str, registry: Registry, artifacts: Artifacts, *,
                name: str = "", labels: Sequence[str] | None = None) -> HeadRecord:
    """Stores a head directory in the artifact store and attaches it to ``camera_id`` (replacing the
    camera's head of the same name; default name: "<kind>-<first 8 hex digits of its sha256>")."""
    if name and not re.match(NAME_PATTERN, name):
        raise ModelError(f"a head's name is letters, digits, '_', '.' and '-', got {name!r}")
    head = TrainedHead.load(directory)  # refuses a directory that is not a head or fails its checksum
    sha256 = head.config["sha256"]
    name, labels = name or f"{head.kind}-{sha256[:8]}", event_labels(head, labels)
    for record in registry.heads():
        if (record.camera_id, record.name, record.sha256, record.labels) == (camera_id, name, sha256, labels):
            return record  # attached already (a service restarted with the same configuration)
    record = HeadRecord(camera_id=camera_id, name=name, kind=head.kind, sha256=sha256,
                        artifact_uri=artifacts.put(directory, f"head-{sha256[:16]}"),
                        model_sha256=head.config["embeddings"]["model_sha256"], labels=labels,
                        attached_time=time.time())
    registry.attach_head(record)
    return record


def load_attached(record: HeadRecord, artifacts: Artifacts, cache_dir: Path) -> TrainedHead:
    """The attached head, checked against the sha256 it was attached with."""
    head = TrainedHead.load(artifacts.fetch(record.artifact_uri, cache_dir))
    if head.config["sha256"] != record.sha256:
        raise ModelError(f"head {record.name} of {record.camera_id}: the artifact's weights are not the attached ones")
    return head
