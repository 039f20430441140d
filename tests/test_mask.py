"""Per-segment validity masks (late starts, holes) and display matrices at any angle, through
`featpipe extract` and read back with `featpipe.open_cache` and with plain h5py + json.

Fixtures are written here with PyAV (tests/media.py). Expected masks come from what was written
(where frames and audio were left out); the turned frames from PIL's ``Image.rotate`` on the frame
a plain PyAV decode gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featpipe import cli, open_cache
from featpipe.decode import DecodeParams, DecodeStats, TAIL_KEEP, count_segments, covered_segments, iter_chunks, probe
from featpipe.decode.timeline import Verdict, rows_before, segment_mask
from featpipe.extractors.base import MediaNeeds
from featpipe.decode.rows import invalid_runs, valid_end
from media import write_clip

PLUGINS = str(Path(__file__).parent / "plugins")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """One extract of four clips (layout: visual, gain: audio per segment, hop: audio at 0.25 s),
    and the late clip again with --pad zero."""
    root = tmp_path_factory.mktemp("mask")
    folder = root / "in"
    folder.mkdir()
    write_clip(folder / "late.mp4", seconds=5, fps=10, video_start=2.5, audio_seconds=7.5, channels=1)
    write_clip(folder / "agap.mp4", seconds=8, fps=10, channels=1, audio_gap=(2.0, 5.0))
    write_clip(folder / "vhole.mp4", seconds=10, fps=10, channels=1, video_gap=(3.0, 7.0))
    write_clip(folder / "plain.mp4", seconds=4, fps=10, channels=1)
    write_clip(folder / "tilt.mp4", seconds=2, fps=10, size=(64, 32), pattern="ramp", rotation=30, channels=1)
    env = {"FEATPIPE_PLUGINS": "fp_layout,fp_gain,fp_hop",
           "PYTHONPATH": os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH", "")]))}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.syspath_prepend(PLUGINS)
    out = {}
    try:
        for key, src, extra in (("repeat", folder, []), ("zero", folder / "late.mp4", ["--pad", "zero"])):
            cache = root / f"{key}.h5"
            res = CliRunner().invoke(cli.main, ["extract", str(src), "-o", str(cache), "--visual", "layout",
                                                "--audio", "gain", "--audio", "hop", "--dtype", "float32",
                                                "--workers", "1", "--quiet", *extra], catch_exceptions=False)
            assert res.exit_code == 0, res.output
            out[key] = cache
    finally:
        mp.undo()
    return out


def masks_of(cache, vid) -> dict[str, list[bool]]:
    with open_cache(cache) as c:
        return {n: c.get(vid, n).mask.tolist() for n in ("layout", "gain", "hop")}


def test_late_start_marks_its_first_segments_and_fills_them(caches):
    with open_cache(caches["repeat"]) as c:
        lay, gain, hop = (c.get("late", n) for n in ("layout", "gain", "hop"))
        rec = c.record("late")
        assert lay.mask.tolist() == [False, False] + [True] * 6  # video from 2.5 s: segment 2 holds half of it
        assert lay.valid == 8 and rec["invalid"] == {"layout": [[0, 2]]}
        np.testing.assert_array_equal(lay.data[0], lay.data[2])  # pad=repeat: the first valid row after
        np.testing.assert_array_equal(lay.data[1], lay.data[2])
        assert gain.mask.all() and gain.valid == 8 and hop.mask.all() and hop.valid == 32  # audio from 0
        assert rec["decoded_segments"] == {"visual": 6, "audio": 8} and rec["valid_by_modality"]["visual"] == 8
        assert rec["streams"]["video"]["start"] == pytest.approx(2.5)
        x, m = c.batch(["late", "plain"], "layout")
        assert m[0].tolist() == lay.mask.tolist() and m[1, :4].all() and not m[1, 4:].any()
    with open_cache(caches["zero"]) as c:
        z = c.get("late", "layout")
        assert z.mask.tolist() == lay.mask.tolist() and not z.data[:2].any()  # pad=zero: zeros
        np.testing.assert_array_equal(z.data[2:], lay.data[2:])


def test_audio_gap_is_invalid_for_audio_features_only(caches):
    got = masks_of(caches["repeat"], "agap")
    assert got["layout"] == [True] * 8
    assert got["gain"] == [True, True, False, False, False, True, True, True]  # hole 2.02 .. 5.02 s
    assert got["hop"] == [i < 8 or i >= 20 for i in range(32)]  # rows of segments 2-4 by their centres
    with open_cache(caches["repeat"]) as c:
        gain = c.get("agap", "gain").data[:, 0]
        assert gain[1] > 0.1 and (gain[2:5] == gain[1]).all()  # fill: the row before the hole, not silence
        rec = c.record("agap")
        assert rec["invalid"] == {"gain": [[2, 5]], "hop": [[8, 20]]}
        (hole,) = rec["streams"]["audio"]["holes"]
        assert hole[0] == pytest.approx(2.0, abs=0.03) and hole[1] == pytest.approx(5.0, abs=0.03)
        assert rec["streams"]["audio"]["decoded"] == pytest.approx(5.0, abs=0.05)  # holes left out


def test_video_hole_is_invalid_for_visual_features_only(caches):
    got = masks_of(caches["repeat"], "vhole")
    assert got["layout"] == [k not in (3, 4, 5, 6) for k in range(10)]
    assert all(got["gain"]) and all(got["hop"])
    with open_cache(caches["repeat"]) as c:
        rec = c.record("vhole")
        (hole,) = rec["streams"]["video"]["holes"]
        assert 3.0 <= hole[0] < 3.2 and hole[1] == pytest.approx(7.0, abs=0.01)
        assert rec["streams"]["video"]["decoded"] == pytest.approx(6.0, abs=0.1)  # the 4 s hole left out
        lay = c.get("vhole", "layout").data
        np.testing.assert_array_equal(lay[3:7], np.repeat(lay[2:3], 4, axis=0))


def test_a_stream_without_holes_is_the_prefix_and_has_no_invalid_key(caches):
    with open_cache(caches["repeat"]) as c:
        rec = c.record("plain")
        assert "invalid" not in rec
        for name, rows in (("layout", 4), ("gain", 4), ("hop", 16)):
            f = c.get("plain", name)
            assert f.mask.all() and f.valid == rows == f.data.shape[0]
        for kind, modality in (("video", "visual"), ("audio", "audio")):
            assert rec["valid_by_modality"][modality] == covered_segments(rec["streams"][kind]["end"], 1.0)


def test_plain_h5py_and_json_read_the_same_masks(caches):
    plain = {}
    with h5py.File(caches["repeat"], "r", swmr=True) as f:  # as docs/cache-format.md describes
        idx = f["videos/index"][:]
        blob = f["videos/records"][: int((idx[:, 0] + idx[:, 1]).max())].tobytes()
        records = {}
        for off, n in idx:
            r = json.loads(blob[off:off + n])
            records[r["video_id"]] = r
        for vid, r in records.items():
            for name, (off, rows, valid) in r["features"].items():
                mask = np.arange(rows) < valid
                for a, b in r.get("invalid", {}).get(name, []):
                    mask[a:b] = False
                plain[vid, name] = mask, f[f"features/{name}/data"][off:off + rows]
    assert len(plain) == 5 * 3
    with open_cache(caches["repeat"]) as c:
        for (vid, name), (mask, data) in plain.items():
            got = c.get(vid, name)
            assert got.mask.tolist() == mask.tolist(), (vid, name)
            np.testing.assert_array_equal(got.data, data)


def test_info_shows_decoded_and_fill_rows(caches):
    res = CliRunner().invoke(cli.main, ["info", str(caches["repeat"]), "--json"])
    feats = json.loads(res.output)["features"]
    assert feats["layout"]["fill_rows"] == 2 + 4 and feats["layout"]["videos_with_fill"] == 2  # late, vhole
    assert feats["gain"]["fill_rows"] == 3 and feats["hop"]["fill_rows"] == 12
    assert feats["gain"]["decoded_rows"] == feats["gain"]["rows"] - 3
    text = CliRunner().invoke(cli.main, ["info", str(caches["repeat"])]).output
    assert "6 fill rows inside 2 videos" in text


def test_the_mask_rule_equals_the_prefix_count_for_streams_without_holes():
    rng = np.random.default_rng(0)
    for end in [*rng.uniform(0, 30, 300), 10.5, 10.49, 10.0, 0.2, 0.5, 1.5, 3.0]:
        for fps in (1.0, 4.0, 0.5):
            mask = segment_mask(np.array([[0.0, end]]), fps)
            assert valid_end(mask) == max(1, covered_segments(end, fps)) and mask[:valid_end(mask)].all()
    late = segment_mask(np.array([[2.5, 7.5]]), 1.0)  # the documented example
    assert late.tolist() == [False, False, True, True, True, True, True, True]
    assert segment_mask(np.array([[2.6, 7.5]]), 1.0)[:3].tolist() == [False, False, False]
    assert segment_mask(np.array([[0.0, 3.0], [3.4, 6.0]]), 1.0).tolist() == [True] * 6  # 0.6 of segment 3
    assert segment_mask(np.array([[0.0, 3.0], [3.6, 6.0]]), 1.0)[3] == (0.4 >= TAIL_KEEP)
    assert segment_mask(np.array([[4.1, 4.3]]), 1.0).tolist() == [False] * 4 + [True]  # never none valid
    # own-hop rows follow their segment by centre, with rows_before's rounding
    v = Verdict(stored=6, valid={"audio": 6}, masks={"audio": np.array([1, 1, 0, 1, 1, 1], bool)}, seg_len=1.0)
    rows = rows_before(6.0, 0.1)
    m = v.row_mask("audio", rows, 0.1, 0.0)
    assert m.tolist() == [not (rows_before(2.0, 0.1) <= i < rows_before(3.0, 0.1)) for i in range(rows)]
    full = Verdict(6, {"audio": 4}, masks={"audio": np.arange(6) < 4}, seg_len=1.0)
    assert valid_end(full.row_mask("audio", rows, 0.1, 0.05)) == rows_before(4.0, 0.1, 0.05)


def _decoded(path, needs, params=DecodeParams(fps=1, chunk_segments=4)):
    info = probe(str(path), params)
    planned, _ = count_segments(info.duration, params)
    stats = DecodeStats()
    chunks = list(iter_chunks(info, needs, params, "x", planned, stats))
    return info, chunks, stats.verdict(params)


@pytest.mark.parametrize("seek", ["never", "always"])
def test_holes_and_late_starts_are_seen_seeking_or_not(tmp_path, seek):
    both = MediaNeeds(frame_positions=(0.5,), audio=True)
    params = DecodeParams(fps=1, chunk_segments=4, seek=seek)
    hole = write_clip(tmp_path / "h.mkv", seconds=10, fps=10, keyint=5, video_gap=(3.0, 7.0))
    _, _, v = _decoded(hole, both, params)
    assert v.masks["visual"].tolist() == [k not in (3, 4, 5, 6) for k in range(10)] and v.masks["audio"].all()
    late = write_clip(tmp_path / "l.mp4", seconds=5, fps=10, keyint=5, video_start=2.5, audio_seconds=7.5)
    _, _, v = _decoded(late, both, params)
    assert v.masks["visual"].tolist() == [False, False] + [True] * 6
    plain = write_clip(tmp_path / "p.mp4", seconds=4, fps=10, keyint=2)  # a target late in its segment:
    _, _, v = _decoded(plain, MediaNeeds(frame_positions=(0.9,)), params)  # the time before it is read too
    assert v.masks["visual"].tolist() == [True] * 4 and v.streams["video"]["holes"] == []


def _plain_frame(path, t: float) -> np.ndarray:
    """The frame on screen at ``t`` from a plain PyAV decode (no display matrix applied)."""
    with av.open(str(path)) as c:
        frames = [f for f in c.decode(video=0) if f.time <= t + 1e-6]
    return frames[-1].to_ndarray(format="rgb24")


def _inside(h: int, w: int, angle: float, margin: float) -> np.ndarray:
    """Output pixels whose source position lies at least ``margin`` pixels inside the picture."""
    t = np.radians(angle)
    j, i = np.mgrid[0:h, 0:w]
    u, v = i - (w - 1) / 2, j - (h - 1) / 2
    x, y = np.cos(t) * u + np.sin(t) * v + (w - 1) / 2, -np.sin(t) * u + np.cos(t) * v + (h - 1) / 2
    return (x >= margin - 0.5) & (x <= w - 0.5 - margin) & (y >= margin - 0.5) & (y <= h - 0.5 - margin)


@pytest.mark.parametrize("written, clockwise", [(30, 330.0), (-30, 30.0), (135, 225.0), (89.4, 271.0)])
def test_display_matrix_at_any_angle_turns_the_frame_as_players_do(tmp_path, written, clockwise):
    path = write_clip(tmp_path / "t.mp4", seconds=2, fps=10, size=(96, 64), pattern="ramp", rotation=written)
    native = MediaNeeds(frame_positions=(0.5,), native_frames=True)
    info, chunks, _ = _decoded(path, native)
    assert info.orientation.angle == clockwise and info.facts()["rotation"] == clockwise
    assert (info.display_width, info.display_height) == (96, 64)  # the rotate filter keeps the size
    got = chunks[0].frames[0.5][0].astype(int)
    raw = _plain_frame(path, 0.5)
    want = np.asarray(Image.fromarray(raw).rotate(-clockwise, resample=Image.BILINEAR)).astype(int)  # PIL: ccw
    inner = _inside(64, 96, clockwise, 2.0)
    assert inner.mean() > 0.5 and np.abs(got - want)[inner].max() <= 1  # bilinear; rounding differs by 1
    assert got[~_inside(64, 96, clockwise, -2.0)].max() == 0  # black outside the turned picture
    small = MediaNeeds(frame_positions=(0.5,), frame_short_side=32)  # scaled after turning, by swscale
    _, chunks, _ = _decoded(path, small)
    frame = chunks[0].frames[0.5][0].astype(int)
    ref = av.VideoFrame.from_ndarray(want.astype(np.uint8), format="rgb24").reformat(
        width=48, height=32, interpolation="BILINEAR").to_ndarray().astype(int)
    assert frame.shape == (32, 48, 3) and np.abs(frame - ref)[_inside(32, 48, clockwise, 3.0)].max() <= 3


def test_rotation_angle_reaches_the_record(caches):
    with open_cache(caches["repeat"]) as c:
        media = c.record("tilt")["media"]
        assert media["rotation"] == 330.0 and media["mirrored"] is False
        assert (media["display_width"], media["display_height"]) == (64, 32)
        lay = c.get("tilt", "layout").data
        assert (lay[:, 12] == 32).all() and (lay[:, 13] == 64).all()  # the frame keeps its size


def test_beat_segments_take_validity_from_their_base_rows():
    from featpipe.run.beat_timeline import beat_mask, valid_segments

    bounds = np.array([[0.0, 1.0], [1.0, 2.5], [2.5, 4.0], [4.0, 4.2], [4.2, 6.0]])
    centres = np.arange(6) + 0.5
    hole = np.array([True, False, False, True, False, True])  # rows 1, 2 and 4 fill
    # beat 1 holds row 1 only; beat 2 rows 2-3 (half valid); beat 3 no centre: row 4 under its middle
    assert beat_mask(bounds, centres, 6.0, hole).tolist() == [True, False, True, False, True]
    for covered in (3.0, 4.1, 5.0, 6.0):  # without fill rows: the start-before-the-end rule alone
        full = np.arange(6) < 5
        assert beat_mask(bounds, centres, covered, full).tolist() == (np.arange(5) < valid_segments(bounds, covered)).tolist()


def test_beat_timeline_keeps_the_fill_of_a_late_start(tmp_path):
    from featpipe.contracts import ExtractOptions
    from featpipe.run.beat_timeline import Timeline
    from featpipe.run.extract_video import VideoJob, process_video

    path = write_clip(tmp_path / "late.mp4", seconds=5, fps=10, video_start=2.5, audio_seconds=7.5)
    job = VideoJob("late", str(path), ("priors", "rhythm", "motion"), ExtractOptions(extra=(("beat_times", "1"),)),
                   DecodeParams(fps=4), timeline=Timeline("beats"))
    res = process_video(job)
    assert res.ok, res.reason
    # base rows of 0.25 s centred at 0.125 + 0.25 i: those before 2.5 s are fill (the video starts there);
    # a beat segment is valid when at least half of the base rows it holds are not
    centres = 0.125 + 0.25 * np.arange(30)
    want = []
    for lo, hi in res.bounds:
        inside = centres[(centres >= lo) & (centres < hi)]
        want.append(2 * (inside >= 2.5).sum() >= inside.size)
    assert not want[0] and any(want)
    assert res.invalid["motion"] == invalid_runs(np.array(want)) and res.valid["motion"] == len(want)
    assert res.invalid["priors"] == [] and res.valid["priors"] == len(want)  # audio from 0


def test_invalid_runs_follow_features_across_runs_and_names(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATPIPE_PLUGINS", "fp_layout,fp_gain")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH", "")])))
    monkeypatch.syspath_prepend(PLUGINS)
    clip = write_clip(tmp_path / "late.mp4", seconds=4, fps=10, video_start=2.5, audio_seconds=6.5, channels=1)
    cache = tmp_path / "c.h5"

    def extract(*args):
        res = CliRunner().invoke(cli.main, ["extract", str(clip), "-o", str(cache), *args, "--workers", "1",
                                            "--quiet"], catch_exceptions=False)
        assert res.exit_code == 0, res.output

    extract("--visual", "layout")
    extract("--audio", "gain")  # a later run adds a feature: the earlier one keeps its runs
    extract("--visual", "layout", "--name", "layout=layout-b")  # a variant: its runs under its stored name
    with open_cache(cache) as c:
        assert c.record("late")["invalid"] == {"layout": [[0, 2]], "layout-b": [[0, 2]]}
        assert c.get("late", "layout").mask.tolist() == c.get("late", "layout-b").mask.tolist() == [False] * 2 + [True] * 5
        assert c.get("late", "gain").mask.all()


@pytest.mark.parametrize("skip", ["auto", "never"])
def test_a_lost_keyframe_is_a_hole_whether_or_not_frames_are_skipped(tmp_path, skip):
    src = write_clip(tmp_path / "k.mp4", seconds=6, fps=10, keyint=10, preset="medium")
    with av.open(str(src)) as c:  # garble the keyframe at 2 s: its group of pictures cannot decode
        key = next(p for p in c.demux(video=0) if p.size and p.is_keyframe and p.pts is not None
                   and abs(float(p.pts * p.time_base) - 2.0) < 0.01)
    data = bytearray(src.read_bytes())
    data[key.pos + 4:key.pos + key.size] = b"\xff" * (key.size - 4)  # the NAL size stays
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    _, _, v = _decoded(bad, MediaNeeds(frame_positions=(0.5,), audio=True), DecodeParams(fps=1, skip=skip))
    assert v.masks["visual"].tolist() == [True, True, False, True, True, True] and v.masks["audio"].all()
    (hole,) = v.streams["video"]["holes"]
    assert hole[0] <= 2.0 and hole[1] == pytest.approx(3.0, abs=0.01)
