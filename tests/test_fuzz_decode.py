"""Fuzz: mutated copies of ordinary fixtures through `featpipe extract`.

Asserts that the run ends, every input has a status, no reason names a Python exception, and no
committed video has more valid segments than an independent, plain PyAV decode of the same file
delivers, nor a segment its mask calls valid where that decode found (almost) nothing. Run as a script for a larger sample and its numbers::

    PYTHONPATH=$PWD python tests/test_fuzz_decode.py --files 300 --out /tmp/fuzz
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import av
import numpy as np
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from media import write_clip  # noqa: E402

PLUGINS = str(Path(__file__).parent / "plugins")
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Exit)\b|Traceback|\(at \w+:\d+\)")
MUTATIONS = ("flip", "flip_header", "truncate", "overwrite", "garbage_tail", "shift")


def fixtures(folder: Path) -> list[Path]:
    """Ordinary clips of the kinds the decoder meets, as mutation sources."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_clip(folder / "plain.mp4", seconds=6, fps=10),
        write_clip(folder / "plain.mkv", seconds=6, fps=10, preset="medium"),
        write_clip(folder / "fast.mp4", seconds=6, fps=10, options={"movflags": "faststart"}, preset="medium"),
        write_clip(folder / "phone.mp4", seconds=4, fps=10, size=(64, 32), rotation=-90, sar=None),
        write_clip(folder / "multi.mkv", seconds=4, fps=10, second_audio=True, cover=True),
    ]


def mutate(src: Path, dst: Path, kind: str, rng: np.random.Generator) -> Path:
    """One damaged copy of ``src``: bit flips, a cut, an overwritten span, garbage, a shifted span."""
    data = bytearray(src.read_bytes())
    n = len(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 40))):
            pos = int(rng.integers(n // 50, n))
            data[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "flip_header":
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, max(1, n // 20)))
            data[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncate":
        data = data[: int(n * rng.uniform(0.05, 0.98))]
    elif kind == "overwrite":
        pos, size = int(rng.integers(n // 20, n)), int(rng.integers(16, 4096))
        data[pos:pos + size] = rng.bytes(min(size, n - pos))
    elif kind == "garbage_tail":
        keep = int(n * rng.uniform(0.02, 0.3))
        data = data[:keep] + bytearray(rng.bytes(n - keep))
    elif kind == "shift":
        pos, size = int(rng.integers(n // 20, n)), int(rng.integers(1, 2048))
        del data[pos:pos + size]
    dst.write_bytes(bytes(data))
    return dst


def covered_share(spans: list[tuple[float, float]], k: int) -> float:
    """Share of segment ``k`` (fps 1) that ``spans`` cover (overlaps counted once)."""
    cuts = sorted((max(a, k), min(b, k + 1)) for a, b in spans if b > k and a < k + 1)
    total, reach = 0.0, float(k)
    for a, b in cuts:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def decodable_spans(path: Path, index: int, kind: str) -> list[tuple[float, float]]:
    """``[t, t + duration)`` (s from the media start) of every frame a plain per-packet PyAV loop decodes."""
    spans = []
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            start = c.start_time / 1e6 if c.start_time is not None else 0.0
            s = c.streams[index]
            rate = float(s.average_rate or 25) if kind == "video" else 0.0
            it = c.demux(s)
            while True:
                try:
                    packet = next(it)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    break
                try:
                    for f in packet.decode():
                        if f.time is not None:
                            dur = 1 / rate if kind == "video" else f.samples / (f.sample_rate or 1)
                            spans.append((f.time - start, f.time - start + dur))
                except av.error.FFmpegError:
                    continue
    except (av.error.FFmpegError, OSError, IndexError):
        return []
    return spans


def mutated_set(folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    sources = fixtures(folder / "src")
    out = folder / "in"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        src = sources[i % len(sources)]
        kind = MUTATIONS[(i // len(sources)) % len(MUTATIONS)]
        files.append(mutate(src, out / f"m{i:04d}_{kind}{src.suffix}", kind, rng))
    return files


def check_records(cache: Path, inputs: list[Path]) -> dict:
    """Every input has a status, reasons are sentences, nothing committed beyond what decodes."""
    from featpipe import open_cache

    report = {r["video_id"]: r for r in map(json.loads, Path(f"{cache}.report.jsonl").read_text().splitlines())}
    assert set(report) == {p.stem for p in inputs}
    for r in report.values():
        assert r["status"] in ("done", "failed")
        assert not EXCEPTION_NAME.search(r["reason"]), r["reason"]
    by_stem = {p.stem: p for p in inputs}
    stats = {"committed": 0, "failed": 0, "bad_packets": 0, "max_gap": 0.0, "reasons": {}}  # max_gap: committed
    with open_cache(cache) as c:
        for vid in c.videos:
            rec = c.record(vid)
            stats["committed"] += 1
            stats["bad_packets"] += rec.get("bad_packets", 0) > 0
            for kind, feature in (("video", "layout"), ("audio", "priors")):
                index = rec["media"][f"{kind}_stream"]
                spans = decodable_spans(by_stem[vid], index, kind)
                end = max((b for _, b in spans), default=0.0)
                honest = max(1, math.floor(end + 0.5 + 1e-9))  # fps 1: segments whose centre decoded
                got = c.get(vid, feature)
                assert got.valid <= honest, (vid, feature, got.valid, end)
                # every segment the mask calls valid holds decoded data by the plain decode too (a
                # quarter at least: the mask wants half, bridging gaps of up to two frame periods)
                shares = [covered_share(spans, k) for k in np.flatnonzero(got.mask)]
                assert len(got.mask) == 1 or min(shares, default=1.0) >= 0.25, (vid, feature, shares)
                stats["with_fill"] = stats.get("with_fill", 0) + bool(rec.get("invalid", {}).get(feature))
                stats["max_gap"] = max(stats["max_gap"], rec["duration"] - rec["streams"][kind]["end"])
    stats["max_gap_failed"] = 0.0  # from reasons "decoded X s of the Y s the file states"
    for r in report.values():
        if r["status"] == "failed":
            stats["failed"] += 1
            m = re.search(r"decoded ([\d.]+) s of the ([\d.]+) s", r["reason"])
            if m:
                stats["max_gap_failed"] = max(stats["max_gap_failed"], float(m[2]) - float(m[1]))
            key = re.sub(r"[\d.]+", "N", r["reason"])[:70]
            stats["reasons"][key] = stats["reasons"].get(key, 0) + 1
    return stats


def run_extract(inputs_folder: Path, cache: Path) -> int:
    from featpipe import cli

    res = CliRunner().invoke(cli.main, ["extract", str(inputs_folder), "-o", str(cache), "--visual", "layout",
                                        "--audio", "priors", "--workers", "1", "--quiet", "--video-timeout", "30",
                                        "--video-timeout-scale", "2"], catch_exceptions=False)
    return res.exit_code


def test_fuzzed_fixtures_end_with_a_status_and_no_invented_segments(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATPIPE_PLUGINS", "fp_layout")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH", "")])))
    monkeypatch.syspath_prepend(PLUGINS)
    files = mutated_set(tmp_path, 36, seed=1)
    code = run_extract(tmp_path / "in", tmp_path / "c.h5")
    assert code in (0, 1)
    stats = check_records(tmp_path / "c.h5", files)
    assert stats["committed"] > 0 and stats["failed"] > 0  # the mix really has both


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    os.environ["FEATPIPE_PLUGINS"] = "fp_layout"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH", "")]))
    sys.path.insert(0, PLUGINS)
    files = mutated_set(a.out, a.files, a.seed)
    code = run_extract(a.out / "in", a.out / "c.h5")
    print(json.dumps({"exit": code, "files": len(files), **check_records(a.out / "c.h5", files)}, indent=1))
