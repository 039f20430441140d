"""Hyperparameter dicts from the library and the CLI, checked against what the heads take."""

from __future__ import annotations

from typing import Any, Mapping

from .data import HeadError


def check_hparams(hparams: Mapping[str, Any] | None, known: Mapping[str, Any], what: str,
                  applicable: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``hparams`` restricted to ``applicable`` (default: ``known``); a name outside ``known``
    (a typo, or a hyperparameter of another task) is a :class:`HeadError` naming it and the known
    ones. Names in ``known`` that ``applicable`` lacks (e.g. epochs for the linear probe) are left
    out; the caller records them."""
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise HeadError(f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                        f"for {what}; known: {', '.join(sorted(known))}")
    keep = known if applicable is None else applicable
    return {k: v for k, v in hparams.items() if k in keep}
