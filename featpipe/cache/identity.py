"""What makes two features "the same": a canonical identity per feature, and its fingerprint.

A feature's identity is everything that changes its stored values for the same video: the
extractor and its version, the spec, the weights, the declared options that affect the output,
the storage dtype, and the decode parameters (the timeline, the audio rate, and the frames the
extractor asks for). Versions of featpipe and PyAV are kept in the provenance but are not part of
the identity: an extractor bumps its ``version`` when its output changes.

The run builds a feature's identity from its extractor (:func:`featpipe.run.plan.identity`); this
module, beside the cache that stores it, compares and describes identities. Appending rows to a
feature whose identity differs would mix meanings under one name, so a run refuses
(:func:`mismatch`), and says what differs and the two ways out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

DECODE_KEYS = ("fps", "max_seconds", "pad", "audio_rate")
"""Decode parameters that change stored values (chunking and seeking do not: tested per extractor)."""


def fingerprint(ident: dict[str, Any]) -> str:
    """A short, stable digest of an identity (sorted-key JSON)."""
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def feature_differences(cached: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """What makes a cached feature and new rows for it different features (none: they may share it).

    Both are provenances (``new`` may be an identity alone). The identities are compared where both
    have one; a feature written before identities were kept is compared by spec and weights, as then.
    The one rule for the run's check (:func:`mismatch`) and the writer's (``CacheWriter.ensure_feature``).
    """
    old, ident = cached.get("identity"), new.get("identity", new)
    if old is None or ident is None:
        return differences(*({k: p.get(k) for k in ("spec", "weights")} for p in (cached, new)))
    return differences(old, ident)


def mismatch(name: str, cache: str, cached: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The one-line refusal when feature ``name`` in ``cache`` is another feature than the new
    provenance ``new`` makes (:func:`feature_differences`), else None."""
    diffs = feature_differences(cached, new)
    if not diffs:
        return None
    key, a, b = diffs[0]
    more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
    variant = f"{name}-{fingerprint(new.get('identity', new))[7:13]}"
    return (f"feature {name!r} in {cache} was made with {key}={a!r}, this run gives {b!r}{more}; rows of another "
            f"meaning cannot share its name: write to a new cache (-o other.h5) or name this variant "
            f"(--name {variant})")


def describe_identity(ident: dict[str, Any]) -> str:
    """One line for ``featpipe info``."""
    opts = ", ".join(f"{k}={v}" for k, v in ident.get("options", {}).items()) or "no options"
    dec = ident.get("decode", {})
    media = ", ".join(f"{k} {dec[k]}" for k in DECODE_KEYS if k in dec)
    frames = dec.get("frames")
    if frames:
        size = "native size" if frames.get("native") else f"short side >= {frames.get('short_side')}"
        media += f", frames at {frames.get('positions')} ({size})"
    beats = dec.get("timeline")
    if beats:
        media += f"; pooled into beat segments of {beats.get('beats_per_segment')} beat(s)"
    return (f"{ident.get('extractor')} v{ident.get('version')}, {opts}, stored {ident.get('dtype')}; "
            f"decode {media}")
