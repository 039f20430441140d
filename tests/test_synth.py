"""featpipe.synth: answers against an independent oracle, audio analysed back, files, determinism."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import av
import numpy as np
import pytest
from avqa_data import real_file
from click.testing import CliRunner

from featpipe.avqa import QUESTION_TYPES, Question, load_questions
from featpipe.synth import SynthError, make_dataset, sample_scene
from featpipe.synth.balance import Balancer
from featpipe.synth.picture import background, render_frame
from featpipe.synth.questions import TEMPLATES, candidates
from featpipe.synth.report import question_only_baseline
from featpipe.synth.scene import KINDS, POSITION_X, Note, Scene, Source, Voiceover
from featpipe.synth.sound import SAMPLE_RATE, render_audio, render_stems

NUM = ("zero", "one", "two", "three", "four", "five")
ORD = ("first", "second", "third", "fourth")


# --- an independent oracle: facts read from the notes, rules written out a second time ----------

def entry(s):
    return s.notes[0].onset


def stop(s):
    return s.notes[-1].onset + s.notes[-1].duration


def rate(s):
    return 1.0 / (s.notes[1].onset - s.notes[0].onset) if len(s.notes) > 1 else s.rate


def always(sc, s):
    return bool(s.notes) and entry(s) <= 0.05 and stop(s) >= sc.seconds - 0.05


def yn(b):
    return "yes" if b else "no"


def clear_rank(snd, s):
    """Rank of s by entry if every other entry is >= 0.75 s away from it, else None."""
    if any(abs(entry(o) - entry(s)) < 0.75 for o in snd if o is not s):
        return None
    return sum(entry(o) < entry(s) for o in snd)


def oracle(sc: Scene, template: str, v: tuple) -> str | None:
    snd = [s for s in sc.sources if s.notes]
    vis = sorted((s for s in sc.sources if s.position), key=lambda s: POSITION_X[s.position])
    vsnd = [s for s in vis if s.notes]
    at = {s.position: s for s in vis}

    def one(pool, kind):
        found = [s for s in pool if s.kind == kind]
        return found[0] if len(found) == 1 else None

    def side(s, lr):
        xs = [o for o in vis if (POSITION_X[o.position] < POSITION_X[s.position]) == (lr == "left") and o is not s]
        return (max if lr == "left" else min)(xs, key=lambda o: POSITION_X[o.position]) if xs else None

    def cmp(a, b, what):
        if a is None or b is None:
            return None
        x, y = {"louder": (a.level_db, b.level_db), "rhythmic": (rate(a), rate(b)),
                "longer": (stop(a) - entry(a), stop(b) - entry(b))}[what]
        if what == "louder" and abs(x - y) < 5 or what == "longer" and abs(x - y) < 1.5:
            return None
        if what == "rhythmic" and max(x, y) < 1.5 * min(x, y):
            return None
        return yn(x > y)

    def ranked(fl_or_th):
        if len(snd) < 2:
            return None
        want = {"first": 0, "last": len(snd) - 1}.get(fl_or_th, ORD.index(fl_or_th) if fl_or_th in ORD else -9)
        hits = [s for s in snd if clear_rank(snd, s) == want]
        return hits[0] if hits else None

    t = template
    if t.startswith("How many musical instruments were heard"):
        return NUM[len(snd)]
    if t == "Is there a <Object> sound?":
        return yn(any(s.kind == v[0] for s in snd))
    if t == "Are there <Object> and <Object> sound? ":
        return yn(all(any(s.kind == k for s in snd) for k in v))
    if t == "Is the <Object> in the video always playing?":
        heard_off = any(s.kind == v[0] and s.notes and not s.position for s in sc.sources)
        s = one(vis, v[0])
        return None if s is None or heard_off else yn(always(sc, s))
    if t.startswith("Is the <Object> ") and "<LR>" not in t:
        what = "louder" if "louder" in t else "rhythmic" if "rhythmic" in t else "longer"
        return cmp(one(snd, v[0]), one(snd, v[1]), what)
    if t == "Is there a <Object> in the entire video?":
        return yn(any(s.kind == v[0] for s in vis))
    if t == "Are there <Object> and <Object> instruments in the video?":
        return yn(all(any(s.kind == k for s in vis) for k in v))
    if t == "How many <Object> are in the entire video?":
        return NUM[sum(s.kind == v[0] for s in vis)]
    if t.startswith("How many types of musical instruments appeared"):
        return NUM[len({s.kind for s in vis})]
    if t == "What is the instrument on the <LR> of <Object>?":
        s = one(vis, v[1])
        n = side(s, v[0]) if s else None
        return n.kind if n else None
    if t.startswith("What kind of instrument is the <LRer>"):
        return (vis[0] if v[0] == "leftest" else vis[-1]).kind if len(vis) > 1 else None
    if t == "What kind of musical instrument is it?":
        return vis[0].kind if len(vis) == 1 else None
    if t == "Where is the performance?":
        return sc.background
    if t == "Is there a voiceover?":
        return yn(sc.voiceover is not None)
    if t == "Is this sound from the instrument in the video?":
        return None if sc.voiceover else yn(all(s.position for s in snd))
    if t == "How many instruments are sounding in the video?":
        return NUM[len(vsnd)]
    if t.startswith("How many instruments in the video did not sound"):
        return NUM[sum(not always(sc, s) for s in vis)]
    if t.startswith("How many sounding <Object>"):
        return NUM[sum(s.kind == v[0] for s in vsnd)]
    if t.startswith("How many types of musical instruments sound"):
        return NUM[len({s.kind for s in vsnd})]
    if t == "Where is the <LL> instrument?":
        key = (lambda s: -s.level_db) if v[0] == "loudest" else (lambda s: float(np.median([n.midi for n in s.notes])))
        if v[0] == "lowest" and any(s.kind == "drum" for s in snd):
            return None
        order = sorted(snd, key=key)  # both margins are 5 (dB, semitones)
        if len(order) < 2 or key(order[1]) - key(order[0]) < 5 or not order[0].position:
            return None
        return order[0].position
    if t == "Is the <FL> sound coming from the <LR> instrument?":
        s = ranked(v[0])
        return yn(s.position == v[1]) if s and s.position and v[1] in at else None
    if t == "What is the <LR> instrument of the <FL> sounding instrument?":
        s = ranked(v[1])
        n = side(s, v[0]) if s and s.position else None
        return n.kind if n else None
    if t.startswith("Which is the musical instrument that sounds at the same time"):
        s = one(snd, v[0])
        if s is None:
            return None
        ov = sorted(((max(0.0, min(stop(s), stop(o)) - max(entry(s), entry(o))), o.kind) for o in snd if o is not s),
                    reverse=True)
        ok = ov and ov[0][0] >= 2 and (len(ov) == 1 or ov[0][0] - ov[1][0] >= 2)
        return ov[0][1] if ok else None
    if "<LR> louder than" in t or "<LR> more rhythmic than" in t:
        what = "louder" if "louder" in t else "rhythmic"
        if "<Object>" in t:
            a, b = at.get(v[1]), at.get(v[3])
            if not (a and b and a.kind == v[0] and b.kind == v[2]):
                return None
        else:
            a, b = at.get(v[0]), at.get(v[1])
        return cmp(a, b, what) if a and b and a.notes and b.notes else None
    if t == "What is the <TH> instrument that comes in?":
        s = ranked(v[0])
        return s.kind if s else None
    if t == "Where is the <FL> sounding instrument?":
        s = ranked(v[0])
        return s.position if s and s.position else None
    if t == "Which <Object> makes the sound <FL>?":
        same = [s for s in snd if s.kind == v[0]]
        if len(same) < 2 or not all(s.position for s in same):
            return None
        es = [entry(s) for s in same]
        if max(es) - min(es) <= 0.05:
            return "simultaneously"
        pick = min(same, key=entry) if v[1] == "first" else max(same, key=entry)
        if any(abs(entry(o) - entry(pick)) < 0.75 for o in same if o is not pick):
            return None
        return pick.position
    if t == "Which instrument makes sounds <BA> the <Object>?":
        s = one(snd, v[1])
        if s is None or clear_rank(snd, s) is None:
            return None
        want = clear_rank(snd, s) + (-1 if v[0] == "before" else 1)
        hits = [o for o in snd if clear_rank(snd, o) == want]
        return hits[0].kind if hits else None
    raise AssertionError(f"oracle lacks template {t!r}")


def test_templates_are_the_real_ones():
    assert len(TEMPLATES) == 33 and len({t.text for t in TEMPLATES}) == 33
    assert {(t.group, t.qtype) for t in TEMPLATES} == set(QUESTION_TYPES)
    qs = load_questions(real_file("avqa-val.json")) + load_questions(real_file("avqa-test.json"))
    real = {(q.template, q.group, q.qtype) for q in qs}
    real_answers = {q.answer for q in qs}
    for t in TEMPLATES:
        assert (t.text, t.group, t.qtype) in real, t.text
        assert set(t.answers) <= real_answers, t.text


def test_every_answer_matches_the_oracle_on_many_scenes():
    asked = Counter()
    for i in range(60):
        sc = sample_scene(11, i)
        for t, cands in zip(TEMPLATES, candidates(sc)):
            for values, answer in cands:
                assert oracle(sc, t.text, values) == answer, (sc.video_id, t.text, values, answer)
                asked[t.text] += 1
    assert set(asked) == {t.text for t in TEMPLATES}  # no template is checked vacuously


# --- a hand-built scene with answers worked out by hand ------------------------------------------

def src(kind, pos, start, end, level, rate_, midi=60, pan=None):
    notes, k = [], 0
    while start + k / rate_ < end - 1e-9:
        on = start + k / rate_
        notes.append(Note(on, min(1 / rate_, end - on), midi))
        k += 1
    pan = {"left": -0.75, "middle": 0.0, "right": 0.75}.get(pos, 0.0) if pan is None else pan
    return Source(kind, pos, bool(notes), start, end if notes else 0.0, level, rate_, pan, tuple(notes))


HAND = Scene("00000042", [0, 0], 10.0, "outdoor", (
    src("violin", "left", 0.0, 10.0, -18.0, 4.0, 76),
    src("piano", "right", 3.0, 10.0, -30.0, 1.0, 60),
    src("flute", None, 6.0, 8.0, -30.0, 2.0, 80),
    Source("cello", "middle", False, 0.0, 0.0, -24.0, 1.0, 0.0),
), None)


@pytest.mark.parametrize("template,values,answer", [
    ("How many musical instruments were heard throughout the video?", (), "three"),
    ("Is there a <Object> sound?", ("cello",), "no"),
    ("Is the <Object> louder than the <Object>?", ("violin", "piano"), "yes"),
    ("Is the <Object> more rhythmic than the <Object>?", ("piano", "violin"), "no"),
    ("Is the <Object> playing longer than the <Object>?", ("piano", "flute"), "yes"),
    ("How many <Object> are in the entire video?", ("flute",), "zero"),
    ("What is the instrument on the <LR> of <Object>?", ("right", "violin"), "cello"),
    ("What kind of instrument is the <LRer> instrument? ", ("rightest",), "piano"),
    ("Where is the performance?", (), "outdoor"),
    ("Is the <Object> in the video always playing?", ("violin",), "yes"),
    ("Is the <Object> in the video always playing?", ("cello",), "no"),
    ("Is this sound from the instrument in the video?", (), "no"),
    ("How many instruments are sounding in the video?", (), "two"),
    ("How many instruments in the video did not sound from beginning to end?", (), "two"),
    ("How many sounding <Object> in the video\uff1f", ("cello",), "zero"),
    ("Where is the <LL> instrument?", ("loudest",), "left"),
    ("Is the <FL> sound coming from the <LR> instrument?", ("first", "left"), "yes"),
    ("Which is the musical instrument that sounds at the same time as the <Object>?", ("piano",), "violin"),
    ("Is the instrument on the <LR> louder than the instrument on the <LR>?", ("right", "left"), "no"),
    ("What is the <TH> instrument that comes in?", ("third",), "flute"),
    ("Where is the <FL> sounding instrument?", ("last",), None),  # the last to come in is off screen
    ("Which instrument makes sounds <BA> the <Object>?", ("after", "piano"), "flute"),
])
def test_hand_built_scene(template, values, answer):
    cands = dict(candidates(HAND)[[t.text for t in TEMPLATES].index(template)])
    assert cands.get(tuple(values)) == answer


# --- the sound, analysed back ---------------------------------------------------------------------

def _db(x):
    return 10 * np.log10(np.mean(x**2) + 1e-20)


def test_mix_analysed_back_onsets_levels_sides():
    sc = Scene("00000001", [3, 1], 4.0, "indoor", (
        src("drum", "left", 0.5, 2.0, -18.0, 4.0, 40),
        src("flute", "right", 2.5, 4.0, -30.0, 1.0, 79)), None)
    x = render_audio(sc).astype(np.float64)
    sr = SAMPLE_RATE
    seg = lambda a, b: x[:, int(a * sr):int(b * sr)]  # noqa: E731
    assert np.max(np.abs(seg(0, 0.5))) == 0 and np.max(np.abs(seg(2.0, 2.5))) == 0  # silent outside
    # level: power summed over both channels, per source, equals its level_db
    assert _db(np.sqrt((seg(0.5, 2.0) ** 2).sum(0))) == pytest.approx(-18.0, abs=0.05)
    assert _db(np.sqrt((seg(2.5, 4.0) ** 2).sum(0))) == pytest.approx(-30.0, abs=0.05)
    # side: the drum is on the left, the flute on the right
    assert _db(seg(0.5, 2.0)[0]) - _db(seg(0.5, 2.0)[1]) > 10
    assert _db(seg(2.5, 4.0)[1]) - _db(seg(2.5, 4.0)[0]) > 10
    # onsets: 5 ms energy frames; a jump of 20 dB marks a drum hit
    hop = int(0.005 * sr)
    e = np.array([_db(x[:, i:i + hop]) for i in range(0, x.shape[1] - hop, hop)])
    jumps = np.flatnonzero((e[1:] - np.maximum(e[:-1], -120)) > 20) + 1
    onsets = [j * 0.005 for j in jumps if j == jumps[0] or j - 1 not in jumps][:6]
    assert np.allclose(onsets, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], atol=0.006)


def test_stems_of_random_scenes_match_ground_truth():
    for i in range(4):
        sc = sample_scene(21, i, seconds=4.0)
        stems = render_stems(sc)
        assert len(stems) == len(sc.sources) + (sc.voiceover is not None)
        for s, st in zip(sc.sources, stems):
            if not s.sounding:
                assert not st.any()
                continue
            a, b = int(s.start * SAMPLE_RATE), int(s.end * SAMPLE_RATE)
            nz = np.flatnonzero(np.abs(st).sum(0) > 1e-9)
            assert abs(nz[0] - a) <= 2 and nz[-1] < b  # enters and leaves at its times
            assert _db(np.sqrt((st[:, a:b] ** 2).sum(0))) == pytest.approx(s.level_db, abs=0.05)
            lr = _db(st[0, a:b]) - _db(st[1, a:b])
            assert np.sign(round(lr, 6)) == -np.sign(s.pan)
        assert np.array_equal(render_audio(sc), render_audio(sc))


def test_rhythm_and_timbre_differ():
    # a fast drum has many more energy peaks than a slow flute of the same length
    def peaks(kind, r):
        sc = Scene("00000001", [0, 0], 3.0, "indoor", (src(kind, "middle", 0.0, 3.0, -20.0, r, 60),), None)
        x = render_audio(sc)[0].astype(float)
        hop = 480
        e = np.array([np.sqrt(np.mean(x[i:i + hop] ** 2)) for i in range(0, len(x) - hop, hop)])
        return int(np.sum((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:]) & (e[1:-1] > 1.5 * np.median(e))))
    assert peaks("drum", 8.0) >= 20 and peaks("flute", 1.0) <= 6


# --- the picture -----------------------------------------------------------------------------------

def test_instrument_moves_only_while_sounding():
    sc = Scene("00000001", [0, 0], 4.0, "indoor", (
        src("violin", "left", 1.0, 2.0, -20.0, 2.0, 76), Source("drum", "right", False, 0.0, 0.0, -20.0, 1.0, 0.75)),
        None, (0, 0, 0, 0, 0, 0))
    bg = background(sc, 64, 112)
    still = [render_frame(sc, t, bg) for t in (0.2, 0.9, 2.5, 3.7)]
    assert all(np.array_equal(still[0], f) for f in still[1:])
    playing = render_frame(sc, 1.02, bg)
    diff = np.abs(playing.astype(int) - still[0]).sum(-1) > 0
    cols = np.flatnonzero(diff.any(0))
    assert cols.size and cols.max() < 112 // 2  # only the left (violin) part changes
    assert not np.array_equal(background(sc, 64, 112), background(
        Scene("00000001", [0, 0], 4.0, "outdoor", sc.sources, None, sc.palette), 64, 112))


# --- files, determinism, balance, CLI ---------------------------------------------------------------

def test_tiny_dataset_written_and_decodable(tmp_path):
    rep = make_dataset(tmp_path, videos=3, seed=2, seconds=2.0, fps=10, size=(64, 48))
    ids = sorted(p.stem for p in (tmp_path / "videos").glob("*.mp4"))
    assert ids == ["00000001", "00000002", "00000003"]
    qs = {s: load_questions(tmp_path / f"avqa-{s}.json") for s in ("train", "val", "test")}
    assert sum(rep.questions.values()) == sum(map(len, qs.values())) > 0
    vids = {s: {q.video_id for q in v} for s, v in qs.items()}
    assert not (vids["train"] & vids["val"]) and not (vids["train"] & vids["test"]) and not (vids["val"] & vids["test"])
    for vid in ids:
        scene = Scene.from_json(json.loads((tmp_path / "scenes" / f"{vid}.json").read_text()))
        assert scene == sample_scene(2, int(vid) - 1, 2.0)
    with av.open(str(tmp_path / "videos" / "00000001.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        assert (v.width, v.height, a.rate, a.channels) == (64, 48, 48000, 2)
        keys = [float(p.pts * p.time_base) for p in c.demux(v) if p.is_keyframe]
    assert keys == [0.0, 1.0]
    with av.open(str(tmp_path / "videos" / "00000001.mp4")) as c:
        frames = list(c.decode(video=0))
    with av.open(str(tmp_path / "videos" / "00000001.mp4")) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    assert len(frames) == 20 and frames[-1].time == pytest.approx(1.9)
    assert 96000 <= audio.shape[1] <= 96000 + 2048
    ref = render_audio(sample_scene(2, 0, 2.0))
    assert np.corrcoef(audio[:, :96000].ravel(), ref.ravel())[0, 1] > 0.9  # AAC kept the signal, aligned


def test_same_seed_same_bytes(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        make_dataset(tmp_path / name, videos=24, seed=seed, write_videos=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.json"))
    assert len(files) == 3 + 24
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "avqa-train.json").read_bytes() != (tmp_path / "c" / "avqa-train.json").read_bytes()


def test_answers_balanced_per_template_and_split(tmp_path):
    rep = make_dataset(tmp_path, videos=80, seed=3, write_videos=False)
    by = defaultdict(Counter)
    for split in ("train", "val", "test"):
        for q in load_questions(tmp_path / f"avqa-{split}.json"):
            by[(split, q.template)][q.answer] += 1
    answers = {t.text: t.answers for t in TEMPLATES}
    for (split, t), c in by.items():
        rarest = min(c[a] for a in answers[t])
        assert max(c.values()) <= 1.25 * rarest + 3, (split, t, c)
        assert set(c) <= set(answers[t])
    assert {(q.group, q.qtype) for q in load_questions(tmp_path / "avqa-train.json")} == set(QUESTION_TYPES)
    assert rep.baseline["All"] < rep.chance["All"] + 0.1


def test_balancer_skips_when_ahead():
    t = next(t for t in TEMPLATES if t.text == "Is there a voiceover?")
    b = Balancer(np.random.default_rng(0), ratio=1.0, slack=1)
    got = [b.choose(0, t, [((), "yes")]) for _ in range(4)]
    assert got == [((), "yes"), ((), "yes"), None, None]
    assert b.choose(0, t, [((), "no"), ((), "yes")]) == ((), "no")


def test_question_only_baseline():
    def q(i, vals, ans):
        return Question(i, "00000001", "Is there a <Object> sound?", "", vals, "Audio", "Counting", ans)
    train = [q(1, ("drum",), "yes"), q(2, ("drum",), "yes"), q(3, ("piano",), "no")]
    test = [q(4, ("drum",), "yes"), q(5, ("piano",), "yes"), q(6, ("flute",), "yes")]
    assert question_only_baseline(train, test)["All"] == pytest.approx(2 / 3)


def test_errors_and_cli(tmp_path):
    with pytest.raises(SynthError, match="videos must be >= 1"):
        make_dataset(tmp_path, videos=0, seed=0)
    with pytest.raises(SynthError, match="seconds must be >= 2"):
        make_dataset(tmp_path, videos=2, seed=0, seconds=1.0)
    from featpipe.cli import main

    res = CliRunner().invoke(main, ["synth", str(tmp_path / "o"), "--videos", "4", "--seed", "1", "--no-videos"])
    assert res.exit_code == 0, res.output
    assert "question-only accuracy on test" in res.output
    assert (tmp_path / "o" / "avqa-train.json").exists()
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "p"), "--videos", "0"])
    assert res.exit_code == 2 and "videos must be >= 1" in res.output


def test_voiceover_is_speech_like():
    sc = Scene("00000001", [0, 0], 4.0, "indoor", (), Voiceover(0.5, 3.5, -24.0, 130.0))
    x = render_audio(sc)
    assert np.max(np.abs(x[:, : int(0.5 * SAMPLE_RATE)])) == 0
    mono = x[0].astype(float)
    env = np.array([np.sqrt(np.mean(mono[i:i + 480] ** 2)) for i in range(int(0.5 * SAMPLE_RATE), int(3.5 * SAMPLE_RATE), 480)])
    assert (env < 0.1 * env.max()).mean() > 0.1  # pauses between syllables and words
    assert set(KINDS) >= {"piano", "violin", "cello", "flute", "trumpet", "drum", "xylophone", "acoustic_guitar"}


# --- beat and tempo truth (synth/beats.py) ---------------------------------------------------------

def test_rhythm_truth_of_hand_scene():
    from featpipe.synth.beats import rhythm_truth, tactus

    r = rhythm_truth(HAND)
    assert [s["source"] for s in r["sources"]] == [0, 1, 2]  # the silent cello has no beats
    assert r["sources"][0] == {"source": 0, "kind": "violin", "position": "left", "tempo_bpm": 240.0,
                               "beats": [k / 4 for k in range(40)]}
    # the piano carries the pulse: struck, unlike the longer-playing violin (bowed)
    assert r["pulse"] == {"source": 1, "tempo_bpm": 60.0, "tempi_bpm": [30.0, 60.0],
                          "beats": [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]}
    assert [tactus(b) for b in (60.0, 120.0, 240.0, 480.0)] == [(60.0, 1), (120.0, 1), (120.0, 2), (120.0, 4)]
    only_violin = Scene("00000001", [0, 0], 4.0, "indoor", (src("violin", "left", 0.0, 4.0, -18.0, 8.0),), None)
    p = rhythm_truth(only_violin)["pulse"]
    assert p["tempo_bpm"] == 120.0 and p["tempi_bpm"] == [120.0, 240.0] and p["beats"] == [0.0, 0.5, 1.0, 1.5, 2.0,
                                                                                          2.5, 3.0, 3.5]
    assert rhythm_truth(Scene("00000001", [0, 0], 4.0, "indoor", (), None)) == {"sources": [], "pulse": None}


def test_scene_files_carry_rhythm_truth(tmp_path):
    from featpipe.synth.beats import rhythm_truth

    make_dataset(tmp_path, videos=6, seed=4, seconds=4.0, write_videos=False)
    for f in sorted((tmp_path / "scenes").glob("*.json")):
        d = json.loads(f.read_text())
        sc = Scene.from_json(d)
        assert d["rhythm"] == rhythm_truth(sc)
        assert json.loads(json.dumps(sc.to_json())) == {k: v for k, v in d.items() if k != "rhythm"}
        for s in d["rhythm"]["sources"]:  # the beats are the notes, the tempo the note rate
            src_ = sc.sources[s["source"]]
            assert s["beats"] == [n.onset for n in src_.notes] and s["tempo_bpm"] == pytest.approx(60 * rate(src_))
        p = d["rhythm"]["pulse"]
        if p is not None:
            notes = [n.onset for n in sc.sources[p["source"]].notes]
            assert set(p["beats"]) <= set(notes) and p["beats"][0] == notes[0]
            assert np.allclose(np.diff(p["beats"]), 60.0 / p["tempo_bpm"])
