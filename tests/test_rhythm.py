"""rhythm: beats and tempo against featpipe synth's ground truth (mir_eval), chunking, sides, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")
mir_eval = pytest.importorskip("mir_eval")

from click.testing import CliRunner  # noqa: E402

from featpipe import cli  # noqa: E402
from featpipe.cache import open_cache  # noqa: E402
from featpipe.decode import DecodeParams, count_segments, iter_chunks, probe  # noqa: E402
from featpipe.extractors import AUDIO_RATE as R  # noqa: E402
from featpipe.extractors import ExtractorError, ExtractOptions, build  # noqa: E402
from featpipe.extractors import rhythm as rhythm_mod  # noqa: E402
from featpipe.extractors.rhythm import COL, CONTEXT_S, DIM, LAYOUT, Rhythm, tempogram  # noqa: E402
from featpipe.synth.beats import rhythm_truth  # noqa: E402
from featpipe.synth.dataset import write_video  # noqa: E402
from featpipe.synth.scene import Note, Scene, Source, Voiceover  # noqa: E402
from featpipe.synth.sound import render_audio  # noqa: E402
from test_priors import chunk  # noqa: E402

T = 8.0  # seconds per test video


def src(kind, pos, start, end, level, rate, midi=60):
    notes, k = [], 0
    while start + k / rate < end - 1e-9:
        on = start + k / rate
        notes.append(Note(on, min(1 / rate, end - on), midi))
        k += 1
    pan = {"left": -0.75, "middle": 0.0, "right": 0.75}[pos]
    return Source(kind, pos, True, start, end, level, rate, pan, tuple(notes))


# One clear pulse each (a struck or plucked instrument at 60 or 120 BPM, see synth/beats.py), with
# a second instrument that competes: sustained, faster but soft-attacked, phase-shifted, quieter.
SCENES = (
    Scene("00000001", [0, 1], T, "indoor", (src("drum", "left", 0, T, -24, 2.0, 40),
                                              src("flute", "right", 0, T, -24, 1.0, 79)), None, (0,) * 6),
    Scene("00000002", [0, 2], T, "indoor", (src("piano", "middle", 0, T, -24, 1.0, 60),
                                              src("violin", "left", 2.0, T, -24, 4.0, 76)), None, (0,) * 6),
    Scene("00000003", [0, 3], T, "outdoor", (src("xylophone", "right", 0.25, T, -24, 2.0, 84),
                                               src("cello", "left", 0, T, -30, 1.0, 45)),
          Voiceover(1.0, 5.0, -30.0, 130.0), (0,) * 6),
    Scene("00000004", [0, 4], T, "indoor", (src("acoustic_guitar", "left", 0, T, -18, 2.0, 55),
                                              src("drum", "right", 0, T, -30, 1.0, 40)), None, (0,) * 6),
)
# Floors (measured on these four videos: beat F 1.00, 1.00, 1.00, 0.97; local tempo within 4 %
# on all of the pulse's segments; on random synth scenes F is 0.78 on average, see
# docs/features.md). One missed or extra beat in an 8 s clip
# costs about 0.03 of F; 0.9 allows two or three. Octave errors cap F at 0.67 (double or half
# tempo) and an off-beat phase gives ~0, so the floor tells a working tracker from a wrong one.
F_FLOOR = 0.9
TEMPO_SEGMENT_FLOOR = 0.9  # mean over the videos of the share of segments within 4 %


@pytest.fixture(scope="module")
def ex() -> Rhythm:
    e = build("rhythm")
    assert isinstance(e, Rhythm)
    e.check()
    e.load("cpu")
    return e


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("rhythm") / "videos"
    root.mkdir()
    for sc in SCENES:
        write_video(sc, root / f"{sc.video_id}.mp4", fps=10, size=(64, 48))
    return root


def decoded(path, ex: Rhythm, chunk_segments: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Features and beat times of a video through featpipe's own decoder (the one decode)."""
    info = probe(str(path))
    params = DecodeParams(chunk_segments=chunk_segments)
    _, valid = count_segments(info.duration, params)
    feats, beats = [], []
    for c in iter_chunks(info, ex.needs(), params, path.stem, valid):
        f, b = ex.analyse(c)
        feats.append(f)
        beats += b
    return np.concatenate(feats), np.concatenate(beats)


def pulse_segments(sc: Scene, n: int) -> list[int]:
    s = sc.sources[rhythm_truth(sc)["pulse"]["source"]]
    return [k for k in range(n) if s.start <= k and k + 1 <= s.end]


def tempo_scores(sc: Scene, tempo: np.ndarray) -> tuple[float, bool]:
    """Share of the pulse's segments whose local tempo is within 4 % of the truth, and whether the
    video's median tempo is (mir_eval's tempo detection, 4 % tolerance, at the tactus level)."""
    truth = rhythm_truth(sc)["pulse"]
    segs = pulse_segments(sc, len(tempo))
    share = float(np.mean([abs(tempo[k] - truth["tempo_bpm"]) <= 0.04 * truth["tempo_bpm"] for k in segs]))
    med = float(np.median(tempo[segs]))
    tactus = truth["tempo_bpm"]
    _, hit, _ = mir_eval.tempo.detection(np.array([tactus, tactus]), 0.5, np.array([med, med]), tol=0.04)
    return share, hit


# --- contract ---------------------------------------------------------------------------------------

def test_layout_options_and_errors(ex: Rhythm) -> None:
    assert [a for _, a, _ in LAYOUT] == list(range(DIM))
    (spec,) = ex.outputs()
    assert spec.name == "rhythm" and spec.shape == (DIM,) and spec.dtype == "float16"
    assert json.loads(spec.attrs["layout"]) == [list(t) for t in LAYOUT]
    assert spec.attrs["start_bpm"] == 120.0 and spec.attrs["librosa"] == librosa.__version__
    assert ex.needs().audio and ex.needs().audio_context == CONTEXT_S and not ex.needs().video
    assert set(Rhythm.option_specs) == {"start_bpm", "tightness", "onset_delta", "beat_times"} and Rhythm.version
    with pytest.raises(ExtractorError, match="takes no arguments"):
        build("rhythm:fast")
    with pytest.raises(ExtractorError, match="must be > 0"):
        build("rhythm", ExtractOptions(extra=(("tightness", "0"),))).check()
    with pytest.raises(ValueError, match="audio context"):
        ex.compute(chunk(np.zeros(R), ctx=1.0))
    with pytest.raises(ValueError, match="segments of"):
        ex.compute(chunk(np.zeros(6 * R), seg_len=3.0, ctx=CONTEXT_S))


def test_missing_librosa_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(rhythm_mod, "librosa", None)
    e = build("rhythm")
    with pytest.raises(ExtractorError) as info:
        e.check()
    assert "pip install" in str(info.value) and "\n" not in str(info.value)


def test_tempogram_equals_librosa() -> None:
    env = np.random.default_rng(0).random(1500)
    full = librosa.feature.tempogram(onset_envelope=env, sr=R, hop_length=rhythm_mod.HOP,
                                     win_length=round(rhythm_mod.TEMPO_WIN_S * R / rhythm_mod.HOP))
    at = np.arange(300, 1200, 5)
    np.testing.assert_allclose(tempogram(env, at), full[:, at].T, rtol=1e-10, atol=1e-12)


def test_batched_beats_equal_librosa_one_window_at_a_time(ex: Rhythm) -> None:
    # the extractor tracks every segment's window in one batched call (sparse=False, 2-D);
    # librosa's plain one-track call on each window must place the same beats
    from featpipe.extractors import dsp

    c = chunk(render_audio(SCENES[2]), first=2, count=4, ctx=CONTEXT_S)
    feats, beats = ex.analyse(c)
    x, a0 = ex._validate(c)
    bounds = dsp.segment_bounds(c.first - 1, c.count + 1, c.seg_len, R)
    j0, n = rhythm_mod._frame_range(bounds)
    env = ex._envelope(ex._mel @ rhythm_mod._stft_power(x, j0 * rhythm_mod.HOP - rhythm_mod.N_FFT // 2 - a0, n).mean(0))
    hop, ctx = rhythm_mod.HOP, rhythm_mod._BEAT_FRAMES
    for k in range(c.count):
        s, e = int(bounds[k + 1] // hop) - j0, int(bounds[k + 2] // hop) - j0  # segment's first frame, one past
        row = env[s - ctx: s - ctx + (e - s) + 2 * ctx]
        _, got = librosa.beat.beat_track(onset_envelope=row, bpm=feats[k, COL["tempo_bpm"]], sr=R, hop_length=hop)
        got = got + s - ctx
        want = (j0 + got[(got >= s) & (got < e)]) * hop / R
        np.testing.assert_allclose(beats[k], want, atol=1e-9)
    assert sum(map(len, beats)) == 8


# --- known signals ------------------------------------------------------------------------------------

def clicks(times, seconds, channels=1):
    x = np.zeros((channels, int(seconds * R)))
    for t in times:
        i = int(round(t * R))
        x[:, i:i + 48] += np.hanning(48) * 0.8 * np.exp(-np.arange(48) / 10)  # a 1 ms click
    return x


def test_click_train_tempo_beats_and_silence(ex: Rhythm) -> None:
    x = clicks(np.arange(0.25, 6.0, 0.5), 8.0)  # 120 BPM for 6 s, then 2 s of silence
    f, beats = ex.analyse(chunk(x, ctx=CONTEXT_S))
    np.testing.assert_allclose(f[1:5, COL["tempo_bpm"]], 120.0, rtol=0.04)
    np.testing.assert_array_equal(f[1:5, COL["beat_count"]], 2)
    np.testing.assert_array_equal(f[1:5, COL["onset_rate"]], 2)
    allb = np.concatenate(beats)
    assert mir_eval.beat.f_measure(np.arange(0.25, 6.0, 0.5), allb, 0.07) > 0.95
    np.testing.assert_allclose(f[1:5, COL["first_beat_s"]], 0.25, atol=0.03)
    # the beats sit on the clicks (the envelope is reported one hop late for that, see rhythm.py)
    err = [np.min(np.abs(allb - t)) for t in np.arange(0.75, 5.5, 0.5)]
    assert max(err) <= 0.005
    assert np.all(f[7, [COL["beat_count"], COL["onset_rate"]]] == 0)  # silence, 1 s after the music
    assert f[7, COL["first_beat_s"]] == -1
    assert np.all(f[:, COL["stereo"]] == 0) and np.all(f[:, COL["onset_rate_left"]] == 0)
    silent = ex.analyse(chunk(np.zeros((2, 4 * R)), ctx=CONTEXT_S))
    assert np.all(silent[0][:, COL["tempo_bpm"]] == 0) and not np.concatenate(silent[1]).size
    assert np.all(np.isfinite(ex.extract(chunk(x, ctx=CONTEXT_S))["rhythm"]))


def test_quieter_copy_same_rhythm(ex: Rhythm) -> None:
    # the envelope is a dB rise, so level does not matter -- except through the -80 dB floor, which
    # a louder attack's window edge crosses a frame earlier: beats may move by one 10 ms hop
    x = render_audio(SCENES[0])
    (a, ba), (b, bb) = ex.analyse(chunk(x, ctx=CONTEXT_S)), ex.analyse(chunk(0.25 * x, ctx=CONTEXT_S))
    cols = [COL[c] for c in ("tempo_bpm", "onset_rate")]
    np.testing.assert_allclose(a[:, cols], b[:, cols], atol=1e-6)
    ba, bb = np.concatenate(ba), np.concatenate(bb)
    assert mir_eval.beat.f_measure(ba, bb, 0.0101) >= 0.95  # a beat at the very end may go


def test_percussive_share_and_sides(ex: Rhythm) -> None:
    drum = Scene("00000001", [0, 0], 6.0, "indoor", (src("drum", "left", 0, 6, -24, 4.0, 40),
                                                     src("piano", "right", 0, 6, -24, 1.0, 60)), None)
    f = ex.compute(chunk(render_audio(drum), ctx=CONTEXT_S))
    inner = slice(1, 5)
    assert np.all(f[inner, COL["onset_rate_left"]] >= 3) and np.all(f[inner, COL["onset_rate_right"]] <= 1)
    np.testing.assert_allclose(f[inner, COL["tempo_right_bpm"]], 60.0, rtol=0.04)
    assert np.all(f[inner, COL["tempo_left_bpm"]] >= 115)  # 240 BPM of notes: 120 or 240 (a prior's choice)
    assert np.all(f[:, COL["stereo"]] == 1)
    # swapping the channels swaps the sides
    g = ex.compute(chunk(render_audio(drum)[::-1], ctx=CONTEXT_S))
    for a, b in (("onset_rate_left", "onset_rate_right"), ("tempo_left_bpm", "tempo_right_bpm")):
        np.testing.assert_allclose(g[:, COL[a]], f[:, COL[b]], atol=1e-6)
    flute = Scene("00000001", [0, 0], 6.0, "indoor", (src("flute", "middle", 0, 6, -24, 1.0, 79),), None)
    h = ex.compute(chunk(render_audio(flute), ctx=CONTEXT_S))
    assert np.all(f[inner, COL["percussive_share"]] > 2 * h[inner, COL["percussive_share"]])


# --- chunking -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mono", [False, True])
def test_chunked_equals_whole(ex: Rhythm, mono: bool) -> None:
    x = render_audio(SCENES[2]).astype(np.float64)
    x = x.mean(axis=0, keepdims=True) if mono else x
    seg = 0.5 if mono else 1.0  # half-second segments too
    n = int(T / seg)
    whole, beats = ex.analyse(chunk(x, seg_len=seg, ctx=CONTEXT_S))
    for size in ((2, 5) if not mono else (3,)):
        parts = [ex.analyse(chunk(x, first=a, count=min(size, n - a), seg_len=seg, ctx=CONTEXT_S))
                 for a in range(0, n, size)]
        got = np.concatenate([p[0] for p in parts])
        counts = [COL["beat_count"], COL["onset_rate"], COL["onset_rate_left"], COL["onset_rate_right"]]
        np.testing.assert_array_equal(got[:, counts], whole[:, counts])
        np.testing.assert_allclose(got, whole, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(np.concatenate([b for p in parts for b in p[1]]), np.concatenate(beats), atol=1e-9)
    assert whole[0, COL["tempo_change_bpm"]] == 0


# --- against featpipe synth's ground truth ----------------------------------------------------------

def test_beats_and_tempo_against_synth_truth(videos, ex: Rhythm) -> None:
    fs, shares = [], []
    for sc in SCENES:
        feats, beats = decoded(videos / f"{sc.video_id}.mp4", ex)
        truth = rhythm_truth(sc)["pulse"]
        fs.append(mir_eval.beat.f_measure(np.array(truth["beats"]), beats, f_measure_threshold=0.07))
        share, hit = tempo_scores(sc, feats[:, COL["tempo_bpm"]])
        shares.append(share)
        assert hit, (sc.video_id, feats[:, COL["tempo_bpm"]])
        np.testing.assert_array_equal(feats[:, COL["beat_count"]], [len(b) for b in np.split(
            beats, np.searchsorted(beats, np.arange(1, len(feats))))])
    assert min(fs) >= F_FLOOR, fs
    assert np.mean(shares) >= TEMPO_SEGMENT_FLOOR, shares
    # the same files decoded in chunks of 3 segments give the same beats
    np.testing.assert_allclose(decoded(videos / "00000002.mp4", ex, 3)[1], decoded(videos / "00000002.mp4", ex)[1])


def test_one_decode_serves_priors_and_rhythm(videos, monkeypatch) -> None:
    from featpipe.run import worker
    from featpipe.decode import timeline

    opened = []
    real = timeline.audio_blocks

    def counting(info, tally, *copies):
        opened.append(info.path)
        return real(info, tally, *copies)

    monkeypatch.setattr(timeline, "audio_blocks", counting)
    path = videos / "00000001.mp4"
    job = worker.VideoJob("00000001", str(path), ("priors", "rhythm"), ExtractOptions(), DecodeParams())
    res = worker.process_video(job)
    assert res.ok, res.reason
    assert opened == [str(path)]  # one audio decode for both extractors
    assert res.arrays["rhythm"].shape == (8, DIM) and res.arrays["priors"].shape[0] == 8


def test_cli_extract_rhythm_against_truth(videos, tmp_path) -> None:
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, ["extract", str(videos), "-o", str(cache), "--audio", "rhythm",
                                        "--workers", "1", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    fs, wins = [], []
    with open_cache(cache) as c:
        assert sorted(c.videos) == [sc.video_id for sc in SCENES]
        for sc in SCENES:
            f = c.get(sc.video_id, "rhythm").data.astype(np.float64)
            assert f.shape == (8, DIM)
            truth = rhythm_truth(sc)["pulse"]
            # beats from the stored rows alone: first beat, then the local beat period
            est = np.concatenate([k + f[k, COL["first_beat_s"]] + np.arange(int(f[k, COL["beat_count"]]))
                                  * 60.0 / max(f[k, COL["tempo_bpm"]], 1.0) for k in range(len(f))])
            fs.append(mir_eval.beat.f_measure(np.array(truth["beats"]), est, 0.07))
            assert tempo_scores(sc, f[:, COL["tempo_bpm"]])[1]
            # the side of the pulse instrument (two notes a second) has at least as many onsets
            # as the other (one note a second); the piano stands in the middle
            side = sc.sources[truth["source"]].position
            if side in ("left", "right"):
                other = "right" if side == "left" else "left"
                wins.append(f[2:7, COL[f"onset_rate_{side}"]].mean() - f[2:7, COL[f"onset_rate_{other}"]].mean())
    assert min(fs) >= F_FLOOR, fs
    # measured +2.0, 0.0 (the bowed cello's notes read two onsets each), +1.0
    assert len(wins) == 3 and min(wins) >= 0 and sum(w > 0 for w in wins) >= 2, wins
