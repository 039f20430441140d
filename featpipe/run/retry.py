"""How a video is tried: how many times, and for how long each time. Every number is here.

- **Tries.** A video gets at most :data:`TRIES` = 3 tries. A try ends in a result (success, or a
  failure with a one-line reason: these are never retried, a bad file stays bad) or in the death
  of its worker process (a crash in the decoder or a model, out of memory). Only deaths are
  retried: after :data:`ALLOWED_FAILURES` = 2 deaths the third try is the last, and a fourth
  start gives up before touching the file. Dask's own bound (``allowed-failures``, set to the
  same number for the clusters featpipe starts) is the scheduler's, which an external scheduler
  sets itself and which also blames videos that were only queued on a dying worker, so featpipe
  counts tries itself: a counter per video on the scheduler (:class:`TryCounter`), added to by the
  task when work starts (:func:`count_try`). When the scheduler gives up first
  (``KilledWorker``) while the video's own tries are under the bound, the client submits it
  again (:meth:`TryPolicy.resubmit`), at most :data:`KILLED_ANSWERS_PER_TRY` times per try.
- **Time limit.** Each try has ``VIDEO_TIMEOUT + TIMEOUT_PER_SECOND * duration`` seconds
  (60 s + 10 x the duration, the duration cut at ``--max-seconds``; at most :data:`MAX_LIMIT`),
  counted from the moment a worker starts it; until the duration is probed, the base alone. A video past its limit is failed, not retried, and its worker is
  restarted (:class:`Watchdog`): a decode stuck in C cannot be interrupted any other way.

Nothing here imports Dask at module level: the policy is plain data, readable without a cluster.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

ALLOWED_FAILURES = 2
"""Worker deaths a video may cause; the try after the last allowed death is its last."""
TRIES = ALLOWED_FAILURES + 1
KILLED_ANSWERS_PER_TRY = 2
"""``KilledWorker`` answers tolerated per allowed try before the client stops resubmitting
(a scheduler can answer ``KilledWorker`` for deaths that were not this video's try)."""
VIDEO_TIMEOUT = 60.0
"""Base of the per-try time limit, in seconds (``--video-timeout``)."""
TIMEOUT_PER_SECOND = 10.0
"""Seconds added to the time limit per second of video (``--video-timeout-scale``)."""
MAX_LIMIT = 6 * 3600.0
"""The most one try may take, whatever duration a file states (a few KB can state ten hours);
a larger ``--video-timeout`` raises it to that."""
COUNTER_WAIT = 5.0
"""Seconds to wait for the scheduler when reading a try counter."""


@dataclass(frozen=True)
class TryPolicy:
    """The bounds of one run: deaths tolerated per video and the per-try time limit.

    ``video_timeout`` None or 0 turns the time limit off.
    """

    allowed_failures: int = ALLOWED_FAILURES
    video_timeout: float | None = VIDEO_TIMEOUT
    timeout_per_second: float = TIMEOUT_PER_SECOND

    def __post_init__(self) -> None:
        if self.allowed_failures < 0:
            raise ValueError(f"allowed_failures must be >= 0, not {self.allowed_failures}")
        if (self.video_timeout or 0) < 0 or self.timeout_per_second < 0:
            raise ValueError("time limits must be >= 0 (0 turns the limit off)")

    @property
    def tries(self) -> int:
        return self.allowed_failures + 1

    @property
    def timed(self) -> bool:
        return bool(self.video_timeout)

    def limit(self, duration: float | None, max_seconds: float | None = None) -> float:
        """Seconds one try of a video of ``duration`` seconds may take (the base while unknown):
        only the part up to ``max_seconds`` is decoded, and never more than :data:`MAX_LIMIT`."""
        seconds = min(duration or 0.0, max_seconds) if max_seconds else (duration or 0.0)
        base = float(self.video_timeout or 0.0)
        return min(base + self.timeout_per_second * seconds, max(MAX_LIMIT, base))

    def gives_up(self, earlier_tries: int) -> bool:
        """Whether a try that finds ``earlier_tries`` before it (each ended by a death) must not start."""
        return earlier_tries > self.allowed_failures

    def resubmit(self, tries: int, killed_answers: int) -> bool:
        """After a ``KilledWorker``: submit again while the video's own tries are under the bound."""
        return tries <= self.allowed_failures and killed_answers <= KILLED_ANSWERS_PER_TRY * self.tries

    def scheduler_config(self) -> dict[str, Any]:
        """Dask settings for the clusters featpipe starts (the scheduler's own bound, the same number)."""
        return {"distributed.scheduler.allowed-failures": self.allowed_failures}

    @staticmethod
    def death_reason(deaths: int) -> str:
        return (f"its worker died {deaths} times while processing it (a crash in the decoder or an "
                "extractor, or out of memory); see the worker logs")

    def timeout_reason(self, elapsed: float, limit: float) -> str:
        return (f"timed out after {elapsed:.0f} s (limit {limit:.0f} s: --video-timeout {self.video_timeout or 0:g} "
                f"+ {self.timeout_per_second:g} x duration); its worker was restarted")


@dataclass(frozen=True)
class TryCounter:
    """What the task of one video needs to count its tries: the scheduler-side counter's name,
    the bound, and the event topic on which it announces "start" and "probed" (None: silent)."""

    counter: str
    allowed_failures: int
    topic: str | None = None

    # -- on the client ---------------------------------------------------------------------
    def create(self, client) -> None:
        """Create the counter at 0 before the task is submitted, so reading it never waits (a
        wait that times out makes the scheduler log a traceback)."""
        from distributed import Variable

        Variable(self.counter, client=client).set(0)

    def read(self, client) -> int:
        """How many times workers started this video."""
        from distributed import Variable

        try:
            return int(Variable(self.counter, client=client).get(timeout=COUNTER_WAIT))
        except TimeoutError:
            return 0

    def delete(self, client) -> None:
        from distributed import Variable

        try:
            Variable(self.counter, client=client).delete()
        except Exception:  # noqa: BLE001 - a lost scheduler is noticed by the dispatch loop
            pass

    # -- on the worker ---------------------------------------------------------------------
    def count_try(self) -> int | None:
        """Add this try to the counter and return the new count (None when it cannot be asked).

        Tries of one video run one after another (Dask retries a task only after its worker died),
        so reading and then setting the counter does not race. Counted here, where the work starts,
        rather than with the scheduler's own death count, which also blames queued tasks.
        """
        try:
            from distributed import Variable, get_client

            var = Variable(self.counter, client=get_client())
            try:
                n = int(var.get(timeout=COUNTER_WAIT))
            except TimeoutError:
                n = 0
            var.set(n + 1)
            return n + 1
        except Exception:  # noqa: BLE001 - e.g. an old scheduler: the scheduler's own bound still holds
            return None

    def refused(self) -> str | None:
        """Count this try; the reason to stop when the earlier ones used up the bound, else None."""
        n = self.count_try()
        earlier = n - 1 if n is not None else 0
        policy = TryPolicy(allowed_failures=self.allowed_failures)
        return policy.death_reason(earlier) if policy.gives_up(earlier) else None


class Watchdog:
    """Per-try time limits, measured on the client from the moment a worker starts the video.

    Workers announce ``start`` and ``probed`` (with the duration) on ``topic``; the limit is
    :meth:`TryPolicy.limit`. A video past its limit is reported by :meth:`expired`; the caller
    cancels it and :meth:`restart` restarts the worker, because a decode stuck in C cannot be
    interrupted from another thread.
    """

    def __init__(self, client, topic: str, policy: TryPolicy) -> None:
        self.client, self.topic, self.policy = client, topic, policy
        self._lock = threading.Lock()
        self._expected: set[str] = set()
        self._running: dict[str, list] = {}  # key -> [worker, started (monotonic), duration or None]
        self.enabled = policy.timed
        if self.enabled:
            client.subscribe_topic(topic, self._on_event)

    def _on_event(self, event) -> None:
        _, msg = event
        key = msg.get("key")
        with self._lock:
            if key not in self._expected:
                return
            if msg.get("stage") == "start":  # also a retry after a worker death: the clock restarts
                self._running[key] = [msg.get("worker"), time.monotonic(), None]
            elif msg.get("stage") == "probed" and key in self._running:
                self._running[key][2] = float(msg.get("duration") or 0.0)

    def expect(self, key: str) -> None:
        with self._lock:
            self._expected.add(key)

    def unwatch(self, key: str) -> None:
        with self._lock:
            self._expected.discard(key)
            self._running.pop(key, None)

    def expired(self) -> list[tuple[str, str, float, float]]:
        """``(key, worker, elapsed, limit)`` of every running video past its limit."""
        if not self.enabled:
            return []
        now = time.monotonic()
        limit = self.policy.limit
        with self._lock:
            over = [(key, w, now - t, limit(d)) for key, (w, t, d) in self._running.items() if now - t > limit(d)]
        if not over:
            return []
        # A try whose worker died is not running: its video waits for a worker (queueing does not
        # count) and its clock restarts with the next try's "start". Asked only when a limit is passed.
        alive = set(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        with self._lock:
            for key, w, _, _ in over:
                if w not in alive and self._running.get(key, [None])[0] == w:
                    del self._running[key]
        return [o for o in over if o[1] in alive]

    def restart(self, worker: str | None) -> None:
        """Restart a worker (through its nanny; one without a nanny is shut down)."""
        if worker and worker in self.client.scheduler_info(n_workers=-1).get("workers", {}):
            self.client.restart_workers([worker], timeout=60, raise_for_error=False)

    def close(self) -> None:
        if self.enabled and self.client.status == "running":
            try:
                self.client.unsubscribe_topic(self.topic)
            except Exception:  # noqa: BLE001 - the scheduler may be gone already
                pass
