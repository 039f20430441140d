"""What runs on a Dask worker for one video: decode once, run every extractor, pad.

Extractors are built and loaded once per worker process (``_EXTRACTORS``), not per video.
Errors become a failed :class:`VideoResult` with a one-line reason, so a bad file never takes
the run down; only a crash of the process itself (which Dask retries elsewhere) escapes.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import extractors
from .decode import DecodeError, DecodeParams, count_segments, iter_chunks, merge_needs, probe
from .extractors.base import ExtractOptions, Extractor

_EXTRACTORS: dict[tuple[str, ExtractOptions], Extractor] = {}


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    path: str
    specs: tuple[str, ...]  # extractors to run for this video (only those with missing outputs)
    options: ExtractOptions
    params: DecodeParams
    dtype: str | None = None  # None: each output's own dtype (float16 for embeddings)


@dataclass
class VideoResult:
    video_id: str
    path: str
    ok: bool
    reason: str = ""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    segments: int = 0
    seconds: float = 0.0


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def get_extractor(spec: str, options: ExtractOptions) -> Extractor:
    """The loaded extractor for ``spec`` in this process (built and loaded on first use)."""
    key = (spec, options)
    if key not in _EXTRACTORS:
        ext = extractors.build(spec, options)
        ext.load(resolve_device(options.device))
        _EXTRACTORS[key] = ext
    return _EXTRACTORS[key]


def _pad(arr: np.ndarray, rows: int, mode: str) -> np.ndarray:
    if arr.shape[0] >= rows:
        return arr[:rows]
    if arr.shape[0] == 0 or mode == "zero":
        fill = np.zeros((rows - arr.shape[0], *arr.shape[1:]), arr.dtype)
    else:  # MUSIC-AVQA's rule: repeat the last second
        fill = np.repeat(arr[-1:], rows - arr.shape[0], axis=0)
    return np.concatenate([arr, fill])


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    if isinstance(exc, DecodeError):
        return text
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" (at {where.name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {text}{loc}"


def process_video(job: VideoJob) -> VideoResult:
    """Decode ``job.path`` once and return every requested output, padded to the timeline."""
    t0 = time.perf_counter()
    result = VideoResult(job.video_id, job.path, ok=False)
    try:
        exts = [get_extractor(s, job.options) for s in job.specs]
        info = probe(job.path)
        params = job.params
        stored, valid = count_segments(info.duration, params)
        needs = merge_needs([e.needs() for e in exts])
        parts: dict[str, list[np.ndarray]] = {o.name: [] for e in exts for o in e.outputs()}
        for chunk in iter_chunks(info, needs, params, job.video_id, valid):
            for e in exts:
                out = e.extract(chunk)
                for name, arr in out.items():
                    parts[name].append(np.asarray(arr))
        for e in exts:
            for o in e.outputs():
                arr = np.concatenate(parts[o.name]) if parts[o.name] else np.zeros((0, *o.shape), np.float32)
                if arr.shape[1:] != tuple(o.shape):
                    raise ValueError(f"{e.spec} gave rows of shape {arr.shape[1:]}, declared {o.shape}")
                if o.hop is None:
                    rows, ok_rows = stored, valid
                    if arr.shape[0] != valid:
                        raise ValueError(f"{e.spec} gave {arr.shape[0]} rows for {valid} segments")
                else:
                    rows = max(1, round(stored * params.seg_len / o.hop))
                    ok_rows = min(arr.shape[0], math.ceil(valid * params.seg_len / o.hop))
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"{e.spec} produced non-finite values")
                result.arrays[o.name] = _pad(arr, rows, params.pad).astype(job.dtype or o.dtype)
                result.valid[o.name] = ok_rows
        result.info = {
            "duration": info.duration, "segments": stored, "valid": valid,
            "media": {"width": info.width, "height": info.height, "frame_rate": info.frame_rate,
                      "audio_rate": info.audio_rate, "audio_channels": info.audio_channels,
                      "video_codec": info.video_codec, "audio_codec": info.audio_codec},
        }
        result.segments = stored
        result.ok = True
    except Exception as exc:  # noqa: BLE001 - every failure of one video is reported, not raised
        result.reason = _one_line(exc)
        result.arrays = {}
    result.seconds = time.perf_counter() - t0
    return result
