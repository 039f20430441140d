"""Getting a Dask distributed client: a LocalCluster by default, or an existing scheduler."""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from typing import Iterator

import dask
from distributed import Client, LocalCluster

ALLOWED_FAILURES = 2
"""How many times a video may take its worker down before it is marked failed (3 tries)."""


@contextmanager
def connect(scheduler: str | None = None, workers: int = 2, threads_per_worker: int = 1,
            timeout: float = 30.0) -> Iterator[Client]:
    """Yield a client; a LocalCluster it starts is closed on exit, an external one is left alone.

    Local workers are separate processes (decoders and models are not thread-safe enough to
    share one interpreter, and a crashing decoder takes only its worker down).
    """
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.worker.daemon": False}):
        if scheduler:
            client = Client(scheduler, timeout=timeout)
            try:
                yield client
            finally:
                client.close()
            return
        dashboard = ":0" if importlib.util.find_spec("bokeh") else None
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address=dashboard, host="127.0.0.1")
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def dashboard_link(client: Client) -> str | None:
    try:
        return client.dashboard_link if client.cluster is None or client.cluster.dashboard_link else None
    except Exception:  # noqa: BLE001 - no dashboard (bokeh absent) is not an error
        return None
