"""Service configuration: defaults, then an optional YAML file, then ``AVSURV_*`` environment variables
(docs/ARCHITECTURE.md, "Conventions"). Every service prints its effective configuration at start, with the
passwords of URLs masked."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from avsurv.clipids import check_camera_id
from avsurv.constants import ANOMALY_STDS, DEFAULT_PROFILE, DEVICES, NOVELTY_EXCLUSION_S, PRECISIONS, PROFILE_NAMES
from avsurv.learning.normalization import NONE, NORMALIZATIONS
from avsurv.media.privacy import parse_privacy

ENV_PREFIX = "AVSURV_"
NOVELTY, EQ5 = "novelty", "eq5"
LABEL_FREE_DETECTORS = (NOVELTY, EQ5)
"""The anomaly detector's label-free scores: site novelty (``avsurv.tasks.novelty``: unlike anything the
camera showed before, in sight and sound) or the paper's d(z_v, z_a) (Eq. 5: sound that does not fit the
picture). Novelty is the default: on the site benchmark its ROC-AUC on the worst camera is well above
Eq. 5's, which falls below chance there (docs/RESULTS.md, "Site scale")."""


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field("default", pattern=r"^[A-Za-z0-9_-]+$", description="location the models learn")
    data_dir: Path = Field(Path("avsurv-data"), description="root of the embedded stores and the clip store")
    bus: str = Field("inprocess://", description="inprocess:// or kafka://host:port[,host:port]")
    vectors: str = Field("", description="http://qdrant:6333 or local:///path; empty: local mode in data_dir")
    state: str = Field("", description="redis://host:6379/0 or embedded:///path; empty: embedded in data_dir")
    artifacts: str = Field("", description="directory of model artifacts, or s3://bucket/prefix (an S3-compatible "
                           "object store); empty: data_dir/artifacts")
    clip_store: str = Field("", description="directory of stored clips, or s3://bucket/prefix; empty: "
                            "data_dir/clips")
    s3_endpoint: str = Field("", description="URL of the S3-compatible server of s3:// stores; empty: AWS S3")
    s3_region: str = Field("", description="region of the s3:// stores; empty: the SDK's default")
    s3_access_key: SecretStr = Field(SecretStr(""), description="access key id of the s3:// stores; empty (with "
                                     "s3_secret_key): the SDK's credential chain (environment, web identity, role)")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="secret access key of the s3:// stores")
    model: str = Field("", description="initial model directory, published as the first version if none exists")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port of the search service (0: any free port)")
    grpc_host: str = Field("", description="gRPC bind address; empty: 127.0.0.1 for avsurv run and the demo (one "
                           "machine), [::] for avsurv serve (a container reached over its network)")
    grpc_tls_cert: str = Field("", description="PEM certificate chain file: gRPC over TLS (with grpc_tls_key)")
    grpc_tls_key: str = Field("", description="PEM private key file of grpc_tls_cert")
    api_read_token: SecretStr = Field(SecretStr(""), description="bearer token for the API's reads (set any "
                                      "token and every API call needs one)")
    api_control_token: SecretStr = Field(SecretStr(""), description="bearer token for everything, including the "
                                         "Control calls that change the platform")
    api_tokens_file: str = Field("", description="file of 'read TOKEN' / 'control TOKEN' lines, added to the "
                                 "token settings (several per scope: rotation)")
    api_camera_schemes: list[str] = Field(["rtsp", "rtsps", "http", "https"], description="URL schemes of camera "
                                          "sources the control API accepts")
    api_camera_roots: list[str] = Field(default_factory=list, description="directories whose files the control "
                                        "API accepts as camera sources (none: no files)")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus metrics port (0: none)")
    dashboard_port: int = Field(8080, ge=0, le=65535, description="web dashboard port of avsurv run and the demo, "
                                "on the gRPC bind address (0: none; services/dashboard)")
    dashboard_hosts: list[str] = Field(default_factory=list, description="host names the dashboard answers to "
                                       "besides loopback names and IP addresses ('.example.com': and its "
                                       "subdomains); others are refused (DNS rebinding)")
    partitions: int = Field(4, ge=1, description="partitions per topic when the services create them")
    kafka_max_poll_interval_ms: int = Field(300_000, ge=1_000, description="Kafka consumer max poll interval")
    kafka_replication_factor: int = Field(1, ge=1, description="replicas of each topic the services create (3 "
                                          "on a production cluster of at least 3 brokers)")
    kafka_security_protocol: str = Field("PLAINTEXT", pattern=f"^({'|'.join(KAFKA_PROTOCOLS)})$",
                                         description="Kafka clients: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = Field("", pattern=f"^({'|'.join(KAFKA_SASL_MECHANISMS)})?$",
                                      description="Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str = Field("", description="Kafka SASL user")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="Kafka SASL password (masked when printed)")
    kafka_ssl_cafile: str = Field("", description="PEM CA bundle that verifies the brokers (SSL, SASL_SSL); empty: "
                                  "the system's")
    state_password: SecretStr = Field(SecretStr(""), description="Redis password (AUTH), kept out of the state URL "
                                      "(masked when printed)")
    state_tls_cafile: str = Field("", description="PEM CA bundle that verifies a rediss:// state server")
    vectors_api_key: SecretStr = Field(SecretStr(""), description="Qdrant server API key (masked when printed)")
    vectors_replication_factor: int = Field(1, ge=1, description="replicas of each collection the services create "
                                            "on a Qdrant cluster")
    batch_size: int = Field(32, ge=1, description="clips per embedding batch")
    # 0.1 s and 1 s chunks (not 0.5 and 2): a clip waits less before it is scored, so an event's NEW message
    # comes sooner (issue 16; bench/event_latency.py in docs/RESULTS.md).
    batch_wait_s: float = Field(0.1, gt=0, description="longest wait to fill an embedding batch")
    decode_threads: int = Field(2, ge=1, le=64, description="embedding: threads decoding a batch's JPEG frames "
                                "(Pillow lets go of the GIL while it decodes; one thread caps a pod near 190 "
                                "clips/s, a GPU's encoders take 2,000)")
    embed_prefetch: bool = Field(True, description="embedding: decode the next batch's JPEG frames while the model "
                                 "embeds this one (one batch ahead, committed only once embedded); off: in turn")
    device: str = Field("auto", pattern=f"^({'|'.join(DEVICES)})$", description="where the embedding, search and "
                        "trainer services run models: auto (a CUDA GPU when torch sees one, else the CPU), cpu or cuda")
    precision: str = Field("auto", pattern=f"^({'|'.join(PRECISIONS)})$", description="how the embedding, search "
                           "and trainer services run the encoders: bf16 autocast or fp32; auto is bf16 for the fg "
                           "profile on a CPU with Intel AMX (it embeds and trains 2.2x faster there), else fp32")
    chunk_seconds: float = Field(1.0, gt=0, le=2.5, description="media seconds per ingest chunk (<= 2.5 s "
                                 "keeps a chunk under Kafka's 1 MB message limit)")
    realtime_files: bool = Field(False, description="ingest: read files at their own pace, like live cameras")
    stall_timeout_s: float = Field(15.0, gt=0, description="ingest: a camera with no data this long is stalled")
    reconnect_max_s: float = Field(60.0, gt=0, description="ingest: longest back-off between reconnects")
    cameras: dict[str, str] = Field(default_factory=dict, description="camera id -> source, started by ingest")
    heads: dict[str, list[str]] = Field(default_factory=dict, description="camera id -> head directories "
                                        "(avsurv heads train --out) attached at start")
    privacy: dict[str, Any] = Field(default_factory=dict, description="camera id ('*': every other camera) -> "
                                    "masks (polygons blacked out), frame_size (masks in pixels) and blur (faces, "
                                    "plates), applied by ingest before a frame leaves it (avsurv.media.privacy)")
    train_min_clips: int = Field(300, ge=10, description="trainer: clips needed before a training round")
    train_every_s: float = Field(0.0, ge=0, description="trainer: seconds between rounds (0: only on request)")
    train_epochs: int = Field(5, ge=1, description="trainer: epochs per round")
    train_profile: str = Field(DEFAULT_PROFILE, pattern=f"^({'|'.join(PROFILE_NAMES)})$",
                               description=f"trainer: model profile ({', '.join(PROFILE_NAMES)}; default "
                               f"{DEFAULT_PROFILE})")
    train_method: str = Field("tpg", description="trainer: tpg (default: on the site benchmark over three seeds "
                              "its novelty alerts rank anomalies 4 to 10 points of ROC-AUC above EPG's and it aligns "
                              "sight and sound better), epg (the paper's), avbt or infonce")
    train_views_weight: float = Field(1.0, ge=0, description="trainer: weight of the audio encoder's own views term "
                                      "(two random views of each clip's sound embed alike; 0: the method alone, as "
                                      "published). On the site benchmark it lifts search and the audio-visual probe; "
                                      "docs/RESULTS.md")
    train_holdout: float = Field(0.2, gt=0, lt=1, description="trainer: share of clips held back to evaluate")
    train_max_clips: int = Field(1000, ge=32, description="trainer: most clips held in memory at once (about 1.3 "
                                 "MB of frames each): a round streams the store in working sets of this many")
    retention_days: float = Field(0.0, ge=0, description="retention: days a clip (and its vectors) is kept (0: no "
                                  "age limit)")
    retention_gb_per_camera: float = Field(0.0, ge=0, description="retention: most GB of clips kept per camera, "
                                           "oldest deleted first, event clips last (0: no size limit)")
    event_retention_days: float = Field(0.0, ge=0, description="retention: days the clips of an anomaly event "
                                        "(its span and the clips it names) are kept after it ends (0: no age limit)")
    retention_every_s: float = Field(60.0, gt=0, description="retention: seconds between two passes of the "
                                     "trainer service over the clip store and the vector collections")
    anomaly_run_idle_s: float = Field(30.0, gt=0, description="anomaly: close a camera's open event after this "
                                      "long without clips (longer than a restart upstream, or events split)")
    calibration_clips: int = Field(120, ge=10, description="anomaly: clips per camera to calibrate a new version")
    anomaly_detector: str = Field(NOVELTY, pattern=f"^({'|'.join(LABEL_FREE_DETECTORS)})$",
                                  description="anomaly: the label-free score, novelty (each modality against the "
                                  "camera's own last half hour) or eq5 (d(z_v, z_a), EPG)")
    novelty_exclusion_s: float = Field(NOVELTY_EXCLUSION_S, ge=0, description="anomaly: novelty compares a clip "
                                       "with the camera's clips at least this long before it (its own event's "
                                       "seconds are not history)")
    normalization: str = Field(NONE, pattern=f"^({'|'.join(NORMALIZATIONS)})$", description="embedding: camera "
                               "(store, search and score each camera's embeddings standardized with its own running "
                               "mean and std; the site's pooled ones while it has under a minute of clips) or none")
    anomaly_stds: float = Field(ANOMALY_STDS, gt=0, description="anomaly: a clip is anomalous above the mean + "
                                "this many std of its camera's calibration (EPG: 2)")

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, cameras: dict[str, str]) -> dict[str, str]:
        for camera_id in cameras:
            check_camera_id(camera_id)  # the clip store refuses any other: its clips would be lost
        return cameras

    @field_validator("privacy")
    @classmethod
    def _privacy(cls, privacy: dict[str, Any]) -> dict[str, Any]:
        parse_privacy(privacy)  # a bad polygon stops the service at start, not its camera later
        return privacy

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if bool(self.grpc_tls_cert) != bool(self.grpc_tls_key):
            raise ValueError("grpc_tls_cert and grpc_tls_key go together")
        return self

    @model_validator(mode="after")
    def _events_kept_longer(self) -> Settings:
        # 0 is "no age limit" (events' clips then outlive ordinary ones anyway); below retention_days they would not
        if self.retention_days and 0 < self.event_retention_days < self.retention_days:
            raise ValueError(f"event_retention_days ({self.event_retention_days}) must be at least retention_days "
                             f"({self.retention_days}): events' clips are kept longer than ordinary ones")
        return self

    @model_validator(mode="after")
    def _kafka_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(f"{self.kafka_security_protocol} needs kafka_sasl_mechanism, kafka_sasl_username and "
                             "kafka_sasl_password")
        return self

    def kafka_client_options(self) -> dict[str, Any]:
        """The security settings as kafka-python client arguments (admin, producer and consumer alike)."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        if self.kafka_ssl_cafile:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        return options

    @property
    def vectors_url(self) -> str:
        return self.vectors or f"local://{self.data_dir / 'qdrant'}"

    @property
    def state_url(self) -> str:
        return self.state or f"embedded://{self.data_dir / 'state.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.artifacts) if self.artifacts else self.data_dir / "artifacts"

    @property
    def clip_store_dir(self) -> Path:
        return Path(self.clip_store) if self.clip_store else self.data_dir / "clips"

    def printable(self) -> dict[str, Any]:
        """The effective configuration with URL passwords masked."""
        return {key: _mask(value) for key, value in self.model_dump(mode="json").items()}


def without_credentials(source: str) -> str:
    """A camera source as it may be shown: ``rtsp://user:pass@host/...`` -> ``rtsp://host/...``."""
    return re.sub(r"(://)[^/@]+@", r"\1", source)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


class ConfigError(Exception):
    pass


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Defaults < YAML file < environment (``AVSURV_GRPC_PORT=50052``; ``AVSURV_CAMERAS`` as
    ``cam0=rtsp://...,cam1=/videos/a.mp4``; ``AVSURV_HEADS`` as ``cam0=/heads/a,cam0=/heads/b``) <
    ``overrides``."""
    values: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read configuration {path}: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration {path} must be a mapping of settings")
        values.update(loaded)
    environ = os.environ if environ is None else environ
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _PARSERS[name](raw) if name in _PARSERS else raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"invalid configuration: {problems}") from error


def _pairs(raw: str, what: str, form: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` items separated by commas."""
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{what} must be {form} pairs separated by commas, got {item!r}")
        pairs.append((name, value))
    return pairs


def _parse_cameras(raw: str) -> dict[str, str]:
    return dict(_pairs(raw, "cameras", "NAME=SOURCE"))


def group_heads(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(camera, head directory) pairs -> the ``heads`` setting."""
    heads: dict[str, list[str]] = {}
    for camera, directory in pairs:
        heads.setdefault(camera, []).append(directory)
    return heads


def _parse_heads(raw: str) -> dict[str, list[str]]:
    return group_heads(_pairs(raw, "heads", "CAMERA=DIR"))


def _parse_privacy(raw: str) -> dict[str, Any]:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"AVSURV_PRIVACY must be JSON (the privacy setting's mapping): {error}") from None


def _parse_list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


_PARSERS = {"cameras": _parse_cameras, "heads": _parse_heads, "api_camera_schemes": _parse_list,
            "api_camera_roots": _parse_list, "dashboard_hosts": _parse_list, "privacy": _parse_privacy}
