"""Hostile media: files whose timestamps or display matrix ask for far more memory or time than
their bytes justify. Each fixture is written here with PyAV (timestamps set by hand); memory is
checked in a subprocess under an address-space limit (``RLIMIT_AS``), never by timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from featpipe.contracts import MediaNeeds
from featpipe.decode import DecodeError, DecodeParams, probe
from featpipe.decode.timeline import DecodeStats, iter_chunks

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000


def write_audio(path: Path, spans: list[tuple[float, float]], frame: int = 4800) -> Path:
    """Mono 48 kHz PCM in Matroska: frames of ``frame`` samples covering each ``[a, b)`` span,
    timestamps set by hand (so the spans may lie hours apart in a file of a few KB)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=RATE)
        s.layout = "mono"
        for a, b in spans:
            for k in range(int(round((b - a) * RATE / frame))):
                t = np.arange(frame) / RATE + a + k * frame / RATE
                f = av.AudioFrame.from_ndarray(
                    (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None], format="s16", layout="mono"
                )
                f.sample_rate, f.time_base = RATE, Fraction(1, RATE)
                f.pts = int(round(a * RATE)) + k * frame
                for p in s.encode(f):
                    c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def write_video(path: Path, times: list[float], size: tuple[int, int] = (64, 48)) -> Path:
    """MPEG-4 video frames at the given times only (seconds, timestamps set by hand)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.time_base = Fraction(1, 10)
        for t in times:
            f = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 128, np.uint8), format="rgb24")
            f.pts, f.time_base = int(round(t * 10)), Fraction(1, 10)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def run_limited(code: str, budget_mb: int, preload: str = "") -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter whose address space
    may grow by only ``budget_mb`` MiB past what it holds once its imports (and ``preload``, a
    line of imports) are done."""
    prelude = (
        textwrap.dedent("""
        import json, resource, sys
        import numpy, av, featpipe.run.extract_video, featpipe.extractors.priors, featpipe.decode
        def _vm():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (_vm() + BUDGET, resource.RLIM_INFINITY))
    """)
        .replace("BUDGET", str(budget_mb << 20))
        .replace("import json,", f"{preload}\nimport json,")
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


PROCESS = """
    from featpipe.contracts import ExtractOptions
    from featpipe.decode import DecodeParams
    from featpipe.run.extract_video import VideoJob, process_video
    r = process_video(VideoJob("v", PATH, ("priors",), ExtractOptions(), DecodeParams(max_seconds=MAX)))
    rec = r.info
    print(json.dumps({"ok": r.ok, "reason": r.reason, "valid": r.valid, "invalid": r.invalid,
                      "segments": rec.get("segments"), "decoded_segments": rec.get("decoded_segments")}))
"""


def test_an_hour_between_two_audio_frames_costs_a_chunk_not_the_hour(tmp_path):
    # 12 s of sound, then one frame an hour later: reading ahead for validity used to buffer the
    # whole hour of silence (1.4 GB of float32 here); now a gap is a count of samples
    path = write_audio(tmp_path / "gap.mkv", [(0.0, 12.0), (3600.0, 3600.1)])
    assert path.stat().st_size < 2_000_000
    out = run_limited(PROCESS.replace("PATH", repr(str(path))).replace("MAX", "20"), budget_mb=300)
    assert out["ok"], out["reason"]
    # the 12 decoded seconds are the valid rows of the 20 stored ones; the rest is no data
    assert out["segments"] == 20 and out["valid"] == {"priors": 12} and out["invalid"] == {"priors": []}
    assert out["decoded_segments"] == {"audio": 12}


def test_the_hour_is_still_silence_in_the_windows(tmp_path):
    # the lazily held gap reads as zeros, the sound around it as itself
    path = write_audio(tmp_path / "gap.mkv", [(0.0, 2.0), (5.0, 8.0)])
    info = probe(str(path))
    stats = DecodeStats()
    chunks = list(iter_chunks(info, MediaNeeds(audio=True), DecodeParams(chunk_segments=3), "v", 8, stats))
    audio = np.concatenate([c.audio for c in chunks], axis=1)[0]
    assert audio.shape[0] >= 8 * RATE
    assert np.abs(audio[: 2 * RATE]).max() > 0.2 and np.abs(audio[5 * RATE : 8 * RATE]).max() > 0.2
    assert np.abs(audio[2 * RATE : 5 * RATE]).max() == 0.0
    assert (
        stats.verdict(DecodeParams(chunk_segments=3)).masks["audio"].tolist() == [True] * 2 + [False] * 3 + [True] * 3
    )


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_a_file_stating_ten_hours_stops_once_the_share_is_out_of_reach(tmp_path, kind):
    # two frames ten hours apart: past the first chunk the stream cannot reach --min-decoded any
    # more, so decoding stops there instead of chunking through 36,000 empty segments
    if kind == "audio":
        path = write_audio(tmp_path / "bomb.mkv", [(0.0, 0.2), (36000.0, 36000.1)])
        needs = MediaNeeds(audio=True)
    else:
        path = write_video(tmp_path / "bomb.mkv", [0.0, 0.1, 36000.0])
        needs = MediaNeeds(frame_positions=(0.5,))
    assert path.stat().st_size < 40_000
    info = probe(str(path))
    assert info.duration >= 36000
    stats = DecodeStats()
    chunks = 0
    with pytest.raises(
        DecodeError, match=rf"the {kind} stream decoded .* can no longer reach 50% \(see --min-decoded\)"
    ):
        for _ in iter_chunks(info, needs, DecodeParams(), "v", 36000, stats):
            chunks += 1
            assert chunks <= 2, "decoding went on through the empty hours"
    assert chunks == 1 and stats.segments == 16
    # a share the stream can still reach (0 here) lets it go on
    stats = DecodeStats()
    it = iter_chunks(info, needs, DecodeParams(min_decoded=0.0), "v", 36000, stats)
    for _ in range(3):
        next(it)
    it.close()


def test_the_early_stop_never_fails_a_file_that_would_pass(tmp_path):
    # a stream with a long hole that still decodes over half of what it states is not stopped
    path = write_audio(tmp_path / "hole.mkv", [(0.0, 30.0), (50.0, 52.0)])
    info = probe(str(path))
    stats = DecodeStats()
    list(iter_chunks(info, MediaNeeds(audio=True), DecodeParams(), "v", 52, stats))
    v = stats.verdict(DecodeParams())
    assert v.masks["audio"].sum() == 32 and v.stored == 52


def test_the_time_limit_is_bounded():
    from featpipe.run.retry import MAX_LIMIT, TryPolicy

    policy = TryPolicy()
    assert policy.limit(60.0) == 60.0 + 10.0 * 60.0
    assert policy.limit(36000.0) == MAX_LIMIT  # a file stating ten hours no longer buys 100,060 s
    assert policy.limit(36000.0, max_seconds=30.0) == 60.0 + 10.0 * 30.0  # the decode stops at 30 s anyway


ROTATE = """
    import numpy as np
    from featpipe.contracts import MediaNeeds
    from featpipe.decode import DecodeParams, probe
    from featpipe.decode.timeline import iter_chunks
    info = probe(PATH)
    frames = [c.frames[0.5] for c in iter_chunks(info, MediaNeeds(frame_positions=(0.5,), native_frames=True),
                                                 DecodeParams(), "v", 1)]
    f = frames[0][0]
    print(json.dumps({"shape": list(f.shape), "angle": info.orientation.angle,
                      "corner": int(f[:50, :50].max()), "centre": float(f[1900:2100, 1900:2100].mean())}))
"""


def test_a_free_angle_on_a_huge_picture_is_turned_in_bounded_memory(tmp_path):
    # 4000x4000 with a 30 degree display matrix: the rotation map alone took 2.7 GB; turned band by
    # band, the decode fits in 700 MB of address space beyond the imports
    from media import write_clip

    path = write_clip(tmp_path / "big.mp4", seconds=0.2, fps=10, size=(4000, 4000), rotation=30, audio=False)
    out = run_limited(ROTATE.replace("PATH", repr(str(path))), budget_mb=700)
    assert out["shape"] == [4000, 4000, 3] and out["angle"] == 330.0
    assert out["corner"] == 0 and out["centre"] > 0  # black outside the turned picture, the picture inside


def test_banded_rotation_gives_the_same_pixels(monkeypatch):
    from featpipe.decode import streams

    img = np.random.default_rng(0).integers(0, 256, (61, 97, 3), dtype=np.uint8)
    whole = streams.rotate(img, 33.0)
    monkeypatch.setattr(streams, "CACHED_MAP_PIXELS", 100)
    monkeypatch.setattr(streams, "BAND_PIXELS", 500)  # bands of 5 rows
    np.testing.assert_array_equal(streams.rotate(img, 33.0), whole)
