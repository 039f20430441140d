"""Test-only Dask worker preload (``DASK_DISTRIBUTED__WORKER__PRELOAD=fp_study_broken``): a bug in
the head that fails one study run, in the real worker processes of a real ``featpipe study``.

``FP_STUDY_BROKEN=ARM:SEED`` (comma-separated for several): while that run trains, the AVQA head's
``fit`` raises an AttributeError from inside the head, as a bug in featpipe's code would.
"""

from __future__ import annotations

import os

import featpipe.heads.runs as _runs
from featpipe.heads.layers import LayerMixHead

_TARGETS = {t.strip() for t in os.environ.get("FP_STUDY_BROKEN", "").split(",") if t.strip()}
_original_run_one = _runs.run_one


def _broken_fit(self, *args, **kwargs):
    return self.no_such_attribute  # AttributeError raised in the head's own method


def run_one(arm, seed, *args, **kwargs):
    if f"{arm}:{seed}" not in _TARGETS:
        return _original_run_one(arm, seed, *args, **kwargs)
    fit = LayerMixHead.fit
    LayerMixHead.fit = _broken_fit  # one thread per worker: no other run sees it
    try:
        return _original_run_one(arm, seed, *args, **kwargs)
    finally:
        LayerMixHead.fit = fit


# the client pickles run_one by name: the workers' module attribute is what runs
_runs.run_one = run_one
