"""Imported last by a warm fork server (:func:`featpipe.run.cluster.warm_workers`): load the run's extractors.

The server imports this while the client plans, so every local worker forked from it starts
with the run's models built and loaded (:mod:`featpipe.run.loaded_extractors` keeps them, and the weights'
pages are shared copy-on-write) instead of building them on its first video. Only the server's
environment holds :data:`WARM_VAR`; it is removed here, so no child sees it. Any failure is left
for the worker to meet and report on its first video, as without a warm server.
"""

from __future__ import annotations

import base64
import os
import pickle
import sys

from ..contracts import ExtractOptions

WARM_VAR = "FEATPIPE_WARM_EXTRACTORS"


def warm_request(specs: tuple[str, ...], options: ExtractOptions) -> str:
    """The value of :data:`WARM_VAR` asking a fork server to load ``specs`` with ``options``."""
    return base64.b64encode(pickle.dumps((tuple(specs), options))).decode("ascii")


def warm_from_environment() -> None:
    """Load what :data:`WARM_VAR` asks for, with one torch thread.

    One thread: no OpenMP pool exists in the server when it forks; each worker then sets its
    own budget (:func:`featpipe.run.worker.use_thread_budget`).
    """
    value = os.environ.pop(WARM_VAR, None)
    if not value:
        return
    saved = os.environ.get("OMP_NUM_THREADS")
    try:
        from .loaded_extractors import get_extractor

        specs, options = pickle.loads(base64.b64decode(value))
        os.environ["OMP_NUM_THREADS"] = "1"  # for a torch imported from here on
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        for spec in specs:
            try:
                get_extractor(spec, options)
            except Exception:  # noqa: BLE001 - the worker builds it again on its first video and reports why
                pass
    except Exception:  # noqa: BLE001 - a request this server cannot read: the workers load as without it
        pass
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


warm_from_environment()
