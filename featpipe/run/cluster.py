"""The client's side of the cluster: getting a Dask client (how videos are tried: :mod:`featpipe.run.retry`).

``connect`` gives a LocalCluster of CPU worker processes by default, one worker per visible
GPU with ``device="cuda"`` (dask-cuda's LocalCUDACluster when installed, else one Nanny per
device with its own ``CUDA_VISIBLE_DEVICES``), or a client of a running scheduler.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
from contextlib import contextmanager, suppress
from typing import Iterator

import dask
from distributed import Client, LocalCluster

from .config import LOCAL_WORKERS
from ..contracts import ExtractOptions, worker_environ
from .retry import TryPolicy


class ClusterError(Exception):
    """No cluster of the kind asked for can be had (e.g. ``--device cuda`` without a GPU)."""


def gpu_devices() -> list[str]:
    """The CUDA devices this machine shows, as ``CUDA_VISIBLE_DEVICES`` entries (ids, UUIDs or MIG ids)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:  # no driver: skip importing torch just to learn that
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _dashboard_address() -> str:
    # The scheduler always serves HTTP (health, metrics; the dashboard when bokeh is installed):
    # on a free port, never the shared default 8787. None would mean 8787, not "off".
    return "127.0.0.1:0"


def gpu_cluster(devices: list[str], threads_per_worker: int = 1):
    """One worker process per device, each seeing only its own device (so ``cuda`` means it)."""
    if not devices:
        raise ClusterError("no GPU is visible (CUDA_VISIBLE_DEVICES is empty or no driver); use --device cpu")
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        pass
    else:
        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(devices), threads_per_worker=threads_per_worker,
                                host="127.0.0.1", dashboard_address=_dashboard_address())
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0,
                                               "dashboard_address": _dashboard_address()}}
    # Each worker's CUDA_VISIBLE_DEVICES is set in its process before anything touches CUDA.
    workers = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": threads_per_worker, "host": "127.0.0.1",
                                                      "env": {"CUDA_VISIBLE_DEVICES": dev},
                                                      "memory_limit": MEMORY_LIMIT // len(devices)}}
               for i, dev in enumerate(devices)}
    return SpecCluster(workers=workers, scheduler=scheduler, name="featpipe-gpu")




def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_budget(workers: int, threads_per_worker: int = 1) -> int:
    """Compute threads (torch intra-op, OpenMP, BLAS) per local worker task: the cores shared out.

    Dask's default is one per worker whatever the core count, so ``--workers 1`` left a core idle.
    """
    return max(1, cores() // max(1, workers * threads_per_worker))


def preload_modules(specs: tuple[str, ...]) -> list[str]:
    """What a local worker should have imported before it starts: the module of each of the run's
    extractors (priors/motion import scipy.signal: seconds) and what its ``load()`` imports, as the
    class declares in ``preload`` (open_clip: 6 s of CPU per process). Only the run's extractor
    modules are imported here, through the registry; an unknown name is left for the client's build
    to report."""
    from .. import extractors

    mods = ["distributed", "featpipe.run.worker"]
    for spec in specs:
        try:
            cls = extractors.extractor_class(extractors.parse_spec(spec)[0])
        except extractors.ExtractorError:
            continue
        mods += [m for m in (cls.__module__, *cls.preload) if m not in mods]
    return mods


def local_cpu(scheduler: str | None, device: str) -> bool:
    """Whether :func:`connect` will start a LocalCluster of CPU workers."""
    return not scheduler and (device == "cpu" or (device == "auto" and not gpu_devices()))


@contextmanager
def warm_workers(specs: tuple[str, ...], workers: int, enabled: bool = True,
                 options: ExtractOptions | None = None) -> Iterator[bool]:
    """Start local workers from a fork server that imports the run's heavy modules once, now.

    Entered before the client builds its own extractors, so the server's imports run beside the
    client's, and every worker (and every restarted one) is forked with them done instead of
    importing torch and open_clip itself. With ``options`` (the jobs' own), the server also
    builds and loads the built-in extractors (:mod:`featpipe.run.preload`), so workers start with the
    models, sharing their weights copy-on-write (a restarted worker too). The server takes the
    environment of this moment (as spawned workers would) plus the run's thread budget, and is
    stopped on exit, so the next run sees its own environment. Yields False (workers are spawned as before) where there is no
    fork server (Windows) or when not ``enabled`` (a GPU or external cluster).
    """
    if not enabled or sys.platform.startswith("win") or "forkserver" not in multiprocessing.get_all_start_methods():
        yield False
        return
    from multiprocessing import forkserver

    env = {**worker_environ(thread_budget(workers)), "PYTHONHASHSEED": "6640"}  # as Dask gives spawned workers
    preload = preload_modules(specs)
    from .. import extractors

    # built-in extractors only: a plugin's load() might start threads, which a fork does not copy
    builtin = tuple(s for s in specs if extractors.parse_spec(s)[0] in extractors.BUILTIN)
    if options is not None and builtin:
        from .preload import WARM_VAR, warm_request

        env[WARM_VAR] = warm_request(builtin, options)
        preload.append("featpipe.run.preload")  # last: after every import it needs
    forkserver.set_forkserver_preload(preload)
    with _environ(env):
        forkserver.ensure_running()
    try:
        with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
            yield True
    finally:
        server = forkserver._forkserver
        pid = getattr(server, "_forkserver_pid", None)
        if pid is not None:  # it holds nothing but imports: do not wait seconds for torch to finalise
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        stop = getattr(server, "_stop", None)  # CPython's own (reaps it); the workers are gone by now
        if stop is not None:
            stop()


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment for the block; every variable it names as before afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


SCHEMES = ("tcp", "tls")
"""The transports ``--scheduler`` takes: plain TCP (trusted networks only) and TLS."""
TLS_HELP = "--tls-ca-file, --tls-cert and --tls-key (or distributed.comm.tls.* in the Dask config)"


def check_address(address: str) -> str:
    """``address`` as ``scheme://host:port`` (a bare ``host:port`` is tcp); a :class:`ClusterError`
    line for anything else (``foo``, ``inproc://``, ``ucx://``, a port that is no number)."""
    scheme, sep, rest = address.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", address.strip()
    if scheme not in SCHEMES:
        why = {"inproc": "inproc:// reaches a scheduler inside this one process only",
               "ucx": "ucx:// needs Dask's UCX transport, which featpipe does not support"}.get(
                   scheme, f"{scheme}:// is not a transport featpipe supports")
        raise ClusterError(f"--scheduler {address}: {why}; give tcp://HOST:PORT or tls://HOST:PORT")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--scheduler {address}: not an address; give tcp://HOST:PORT or tls://HOST:PORT "
                           "(e.g. tcp://head:8786)")
    return f"{scheme}://{host}:{port}"


def security(address: str | None, tls: tuple[str | None, str | None, str | None] = (None, None, None)):
    """Dask's ``Security`` for a ``tls://`` scheduler: the files given (CA, certificate, key), else
    those of the Dask config (``distributed.comm.tls.*``); None for ``tcp://`` and local clusters.

    Raises :class:`ClusterError` (one line) for certificates without a ``tls://`` scheduler, a
    ``tls://`` scheduler without them, or a file that cannot be read.
    """
    given = any(tls)
    if not address or not check_address(address).startswith("tls://"):
        if given:
            raise ClusterError("--tls-ca-file/--tls-cert/--tls-key go with --scheduler tls://HOST:PORT")
        return None
    from distributed.security import Security

    for name, path in zip(("--tls-ca-file", "--tls-cert", "--tls-key"), tls):
        if path is not None and not os.access(path, os.R_OK):
            raise ClusterError(f"{name} {path}: cannot read the file")
    ca, cert, key = tls
    sec = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True) if given \
        else Security(require_encryption=True)
    if not sec.tls_ca_file or not sec.tls_client_cert:
        raise ClusterError(f"--scheduler {address}: a tls:// scheduler needs {TLS_HELP}")
    return sec


@contextmanager
def connect(scheduler: str | None = None, workers: int = LOCAL_WORKERS, threads_per_worker: int = 1,
            timeout: float = 30.0, device: str = "cpu", policy: TryPolicy | None = None,
            tls: tuple[str | None, str | None, str | None] = (None, None, None)) -> Iterator[Client]:
    """Yield a client; a cluster it starts is closed on exit, an external one is left alone.

    ``scheduler``: ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (:func:`check_address`); ``tls``
    the CA, certificate and key files for ``tls://`` (:func:`security`).

    Local workers are separate processes (decoders and models are not thread-safe enough to
    share one interpreter, and a crashing decoder takes only its worker down).
    """
    # worker-saturation 1.0: a worker holds only the videos it runs, none queued, so a crash
    # does not count against innocent videos that were merely waiting on that worker.
    with dask.config.set({**(policy or TryPolicy()).scheduler_config(),
                          "distributed.scheduler.worker-saturation": 1.0,
                          "distributed.worker.daemon": False}):
        if scheduler:
            sec = security(scheduler, tls)
            try:
                client = Client(check_address(scheduler), timeout=timeout, security=sec)
            except (OSError, TimeoutError) as exc:  # refused, timed out, a TLS handshake that failed
                raise ClusterError(f"cannot reach the Dask scheduler {scheduler}: {str(exc).splitlines()[0]}") from None
            except (ValueError, TypeError) as exc:  # what Dask says of an address or TLS setup it cannot use
                raise ClusterError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None
            try:
                yield client
            finally:
                client.close()
            return
        devices = gpu_devices() if device in ("cuda", "auto") else []
        if device == "cuda" or devices:
            cluster = gpu_cluster(devices, threads_per_worker)
        else:
            budget = worker_environ(thread_budget(workers, threads_per_worker))
            # Dask's nanny lets os.environ beat pre-spawn-environ and writes that environment into this
            # process for good: set the budget here for the start, and put back what was there after
            with _environ(budget), dask.config.set({"distributed.nanny.pre-spawn-environ": budget}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                       dashboard_address=_dashboard_address(), host="127.0.0.1")
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def dashboard_link(client: Client) -> str | None:
    """The dashboard's address, from the port the scheduler actually serves it on.

    None when there is none. A scheduler always serves HTTP (health, metrics) and reports it as
    "dashboard", even with ``--no-dashboard`` or without bokeh; the real dashboard exists only
    where the scheduler imported its bokeh module, so ask the scheduler (a lambda, pickled by
    value: the scheduler need not have featpipe).
    """
    try:
        if not client.run_on_scheduler(lambda: "distributed.dashboard.scheduler" in __import__("sys").modules):
            return None
        port = client.scheduler_info(n_workers=0).get("services", {}).get("dashboard")
        if not port:
            return None
        host = client.scheduler.address.split("://")[-1].rsplit(":", 1)[0]
        return dask.config.get("distributed.dashboard.link").format(
            scheme="http", host=host, port=port, **os.environ)
    except Exception:  # noqa: BLE001 - no dashboard is not an error
        return None
