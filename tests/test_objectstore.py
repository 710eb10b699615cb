"""The clip store's and the artifact store's contracts, held by the directory stores (the embedded default)
and by the S3 adapters against a real S3-compatible HTTP server (moto's, on a loopback port), and the
settings that choose them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from platformkit import untrained_model
from realparts import free_port

from avsurv.adapters.artifacts import Artifacts, DirectoryArtifacts
from avsurv.adapters.objectstore import MANIFEST, ObjectArtifacts, ObjectStore
from avsurv.adapters.state import connect_state
from avsurv.platform.archive import ClipArchive, open_archive, open_artifacts
from avsurv.platform.config import Settings, load_settings
from avsurv.platform.model_versions import load_version, publish_model
from avsurv.platform.registry import Registry
from avsurv.v1 import messages_pb2 as pb

KEYS = {"s3_access_key": "test-access", "s3_secret_key": "never-printed-secret", "s3_region": "us-east-1"}
buckets = (f"bucket-{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_settings(endpoint: str, **stores: str) -> Settings:
    """Settings whose ``stores`` are in a new bucket of the server (``s3://BUCKET/<value>``)."""
    bucket = next(buckets)
    boto3.client("s3", endpoint_url=endpoint, region_name=KEYS["s3_region"], aws_access_key_id="x",
                 aws_secret_access_key="x").create_bucket(Bucket=bucket)
    return load_settings(environ={}, s3_endpoint=endpoint, **KEYS,
                         **{name: f"s3://{bucket}/{prefix}" for name, prefix in stores.items()})


@pytest.fixture(params=["directory", "s3"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ClipArchive, Artifacts]:
    if request.param == "directory":
        settings = load_settings(environ={}, data_dir=tmp_path / "data")
    else:
        settings = s3_settings(request.getfixturevalue("endpoint"), clip_store="site/clips",
                               artifacts="site/artifacts")
    return open_archive(settings), open_artifacts(settings)


def test_the_settings_choose_the_stores_and_never_print_the_credentials(endpoint: str, tmp_path: Path) -> None:
    settings = s3_settings(endpoint, clip_store="clips", artifacts="models")
    assert isinstance(open_archive(settings).files, ObjectStore)
    assert isinstance(open_artifacts(settings), ObjectArtifacts)
    assert KEYS["s3_secret_key"] not in json.dumps(settings.printable())
    assert KEYS["s3_access_key"] not in json.dumps(settings.printable())
    embedded = load_settings(environ={}, data_dir=tmp_path)
    assert isinstance(open_artifacts(embedded), DirectoryArtifacts)
    assert open_archive(embedded).path("cam0:1000").is_relative_to(tmp_path / "clips")


def test_the_clip_store_keeps_each_clip_once_in_capture_order(stores: tuple[ClipArchive, Artifacts]) -> None:
    archive, _ = stores
    ids = {camera: [f"{camera}:{1_700_000_000_000 + 250 * s}" for s in (0, 4, 40)]
           for camera in ("cam0", "gate-north.2")}
    for clip_id in [*reversed(ids["cam0"]), *ids["gate-north.2"], ids["cam0"][0]]:  # the last one again
        camera = clip_id.rpartition(":")[0]
        uri = archive.put(pb.Clip(header=pb.Header(camera_id=camera, clip_id=clip_id), has_audio=True))
        assert uri.endswith(f"{camera}/{clip_id.rpartition(':')[2].zfill(15)}.pb")
    assert archive.clip_ids() == ids["cam0"] + ids["gate-north.2"]
    assert archive.clip_ids("cam0") == ids["cam0"] and archive.clip_ids("cam9") == []
    assert len(archive) == 6
    assert archive.get(ids["cam0"][1]).header.clip_id == ids["cam0"][1] and archive.get(ids["cam0"][1]).has_audio
    with pytest.raises(KeyError, match="not in the clip store"):
        archive.get("cam0:5")
    with pytest.raises(ValueError, match="not a clip id"):
        archive.put(pb.Clip(header=pb.Header(camera_id="x", clip_id="../etc:1")))


def test_the_artifact_store_stores_once_and_fetches_whole_artifacts(stores: tuple[ClipArchive, Artifacts],
                                                                    tmp_path: Path) -> None:
    _, artifacts = stores
    source = tmp_path / "model"
    (source / "heads").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights" * 1000)
    (source / "heads" / "config.json").write_text("{}")
    uri = artifacts.put(source, "v1")
    assert artifacts.exists(uri) and artifacts.put(source, "v1") == uri  # storing again is a no-op
    for cache in (tmp_path / "cache", tmp_path / "cache"):  # the second fetch finds the first's copy
        fetched = artifacts.fetch(uri, cache)
        assert (fetched / "model.safetensors").read_bytes() == b"weights" * 1000
        assert (fetched / "heads" / "config.json").read_text() == "{}"
    missing = uri.replace("v1", "v2")
    assert not artifacts.exists(missing)
    with pytest.raises(FileNotFoundError):
        artifacts.fetch(missing, tmp_path / "cache")
    with pytest.raises(ValueError, match="outside the store"):
        artifacts.fetch("file:///etc", tmp_path)
    with pytest.raises(ValueError, match="plain name"):
        artifacts.put(source, "../escape")


def test_an_artifact_without_its_manifest_is_not_there_yet(endpoint: str, tmp_path: Path) -> None:
    settings = s3_settings(endpoint, artifacts="models")
    store = open_artifacts(settings).store
    store.put("v1/model.safetensors", b"half of a model")  # a writer interrupted before its manifest
    artifacts = ObjectArtifacts(store)
    assert not artifacts.exists(store.uri("v1"))
    with pytest.raises(FileNotFoundError):
        artifacts.fetch(store.uri("v1"), tmp_path)
    store.put("v1" + MANIFEST, json.dumps({"model.safetensors": 99}).encode())  # sizes that do not match
    with pytest.raises(OSError, match="manifest"):
        artifacts.fetch(store.uri("v1"), tmp_path)
    assert not (tmp_path / "v1").exists()


def test_errors_other_than_a_missing_object_are_raised(endpoint: str) -> None:
    settings = s3_settings(endpoint, clip_store="clips")
    archive = ClipArchive(ObjectStore("s3://no-such-bucket/clips", endpoint=endpoint, region="us-east-1",
                                      access_key="x", secret_key="x"))
    with pytest.raises(Exception, match="NoSuchBucket"):
        archive.get("cam0:1000")
    assert open_archive(settings).clip_ids() == []


def test_a_model_version_published_to_the_object_store_loads_from_it(endpoint: str, tmp_path: Path) -> None:
    settings = s3_settings(endpoint, artifacts="models")
    registry = Registry(connect_state(f"embedded://{tmp_path / 'state.db'}"), "site")
    record = publish_model(untrained_model(tmp_path / "model", seed=3), registry, open_artifacts(settings), None)
    assert record.artifact_uri.startswith(settings.artifacts + "/")
    loaded = load_version(record.version, registry, open_artifacts(settings), tmp_path / "cache")
    assert loaded.version == record.version
