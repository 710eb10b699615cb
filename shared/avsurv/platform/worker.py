"""The shape every service loop shares: a thread that repeats ``step()`` until stopped, reports its health
and hands back in-flight work on stop (a consumer stops between messages, so whatever it has not
committed is redelivered to the next one) and after a failed step (``start_over``: as a restart would)."""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Gauge

log = logging.getLogger("avsurv")

PROCESSED = Counter("avsurv_messages_processed_total", "Messages processed", ["service"])
DEAD_LETTERED = Counter("avsurv_messages_dead_lettered_total", "Messages sent to the dead-letter topic", ["service"])
ERRORS = Counter("avsurv_step_errors_total", "Unexpected errors in a service loop", ["service"])
UP = Gauge("avsurv_service_up", "1 while the service loop runs", ["service"])


class Worker(threading.Thread):
    name_: str = "worker"

    def __init__(self) -> None:
        super().__init__(name=self.name_, daemon=True)
        self.stopping = threading.Event()
        self.failure: str | None = None
        self.last_step = time.monotonic()

    def step(self) -> None:
        """One unit of work (poll, process, commit); returns quickly when there is nothing to do."""
        raise NotImplementedError

    def close(self) -> None:
        """Releases subscriptions and clients; called once on the loop's thread when it ends."""

    def start_over(self) -> None:
        """Called after a failed step: forget the work in flight as a restart would, so that it comes again (a
        consumer leaves its group, to rejoin at its next step and be handed every uncommitted message).
        Without it a step that failed halfway (the state store or the broker away) drops what it had polled
        until the process restarts, and the commits behind it stall. Must not raise; nothing by default."""

    def run(self) -> None:
        UP.labels(self.name_).set(1)
        try:
            while not self.stopping.is_set():
                try:
                    self.step()
                except Exception as error:  # a bad step must not kill the service; it is logged and retried
                    ERRORS.labels(self.name_).inc()
                    self.failure = f"{type(error).__name__}: {error}"
                    log.exception("%s: step failed", self.name_)
                    self.start_over()
                    self.stopping.wait(1.0)
                else:
                    self.failure = None
                self.last_step = time.monotonic()
        finally:
            self.close()
            UP.labels(self.name_).set(0)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)

    def healthy(self) -> bool:
        return self.is_alive() and self.failure is None

    def drained(self) -> bool:
        """Whether it has done all it was given so far (``avsurv run --exit-when-done`` waits for every
        worker's); a worker that is given nothing (the trainer) always has."""
        return True
