"""featpipe's local Dask workers start without Dask's MALLOC_TRIM_THRESHOLD_=65536.

Set at all, that variable turns off glibc's adaptive mmap threshold: every array over 128 KiB is
a fresh mmap the kernel maps and zeroes again, which made a study's runs 1.5 to 2.5 times slower
than the same training in one process (featpipe.contracts.worker_environ). Spawned workers read it
at process start, so what matters is the environment they start with."""

from __future__ import annotations

import os

from featpipe.contracts import THREAD_VARS, worker_environ
from featpipe.heads import runs
from featpipe.run.cluster import connect, thread_budget


def _env():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), {k: os.environ.get(k) for k in THREAD_VARS}


def test_worker_environ_is_the_thread_budget_only():
    assert worker_environ(3) == {k: "3" for k in THREAD_VARS}


def test_extraction_workers_start_without_the_malloc_trim_threshold(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # an earlier cluster in this process may have left it
    with connect(workers=1) as client:
        (seen,) = client.run(_env).values()
    assert seen == (None, worker_environ(thread_budget(1)))


def test_study_workers_start_without_the_malloc_trim_threshold(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with runs.client_for(None, 1) as client:
        (seen,) = client.run(_env).values()
    assert seen == (None, worker_environ(1))
