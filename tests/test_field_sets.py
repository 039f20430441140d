"""Issue 11: the field's feature sets fill one cache in one pass, and every command that the export
layouts print as a hint (featpipe/interop/layouts.py) parses and makes what its folder needs.

The one-pass command is read from docs/features.md and run as written, in a folder holding
``videos/`` from `featpipe synth`; only the weights change, as in tests/test_interop_e2e.py.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featpipe import cli, open_cache
from featpipe.cache import CacheWriter
from featpipe.contracts import ExtractOptions
from featpipe.extractors import build
from featpipe.interop.layouts import LAYOUTS
from featpipe.run.plan import check_options
from featpipe.text import build_text_encoder
from test_interop_e2e import LAYOUT_COMMANDS, ROOT, run_cli, tiny, use_tiny_models

DOC = ROOT / "docs" / "features.md"


def documented_one_pass() -> list[str]:
    """The commands of the block under docs/features.md's ``<!-- one-pass`` marker."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("```bash", text.index("<!-- one-pass")) + len("```bash")
    block = text[start:text.index("```", start)].replace("\\\n", " ")
    return [" ".join(line.split()) for line in block.splitlines() if line.strip()]


@pytest.mark.slow  # starts real Dask worker processes
def test_documented_one_pass_fills_one_cache(tmp_path, tmp_path_factory, monkeypatch):
    use_tiny_models(monkeypatch, tmp_path_factory)
    r = run_cli("synth", tmp_path / "syn", "--videos", "2", "--seconds", "2", "--seed", "5")
    assert r.exit_code == 0, r.output
    (tmp_path / "syn" / "videos").rename(tmp_path / "videos")
    monkeypatch.chdir(tmp_path)
    extract, info = documented_one_pass()
    assert extract.startswith("featpipe extract videos/ -o field.h5") and info == "featpipe info field.h5"
    r = run_cli(*tiny(extract))
    assert r.exit_code == 0, r.output
    assert "done 2, skipped 0, failed 0" in r.output  # one run, every extractor
    shown = run_cli(*shlex.split(info)[1:])
    assert shown.exit_code == 0, shown.output
    desc = json.loads(CliRunner().invoke(cli.main, ["info", "field.h5", "--json"]).output)
    want = {"vggish": (128,), "resnet18-14x14": (512, 14, 14), "resnet18-14x14-pooled": (512,),
            "tome14-vit_large_patch16_384-random": (14, 1024), "clip-ViT-B-32-tiny-random": (512,),
            "clip-ViT-B-32-tiny-random-cls-tokens": (50, 512)}
    assert set(desc["features"]) == set(want)
    for name, shape in want.items():
        f = desc["features"][name]
        assert tuple(f["shape"]) == shape and f["videos"] == 2 and f["rows"] == 120, name
        same = ("hop", "start", "on_segment_timeline")  # (the window is each model's own: 0.975 s for VGGish)
        assert [f["timeline"][k] for k in same] == [1.0, 0.5, True], (name, f["timeline"])
        line = next(ln for ln in shown.output.splitlines() if ln.strip().startswith(name + " "))
        assert "segment timeline: row i at 0.5 + i*1 s" in line, line
    assert desc["features"]["tome14-vit_large_patch16_384-random"]["spec"] == "tome:vit_large_patch16_384/random"
    with open_cache("field.h5") as c:
        for v in c.videos:
            emb, toks = (c.get(v, n).data for n in ("clip-ViT-B-32-tiny-random", "clip-ViT-B-32-tiny-random-cls-tokens"))
            np.testing.assert_array_equal(toks[:, 0], emb)  # PSTP-Net's row 0: the image embedding
            assert not np.array_equal(toks[:, 1], emb)
            rows = {n: c.get(v, n).data for n in want}
            assert {a.shape[0] for a in rows.values()} == {60}
            for a in rows.values():  # 2 s recorded: seconds 2..59 repeat second 1
                assert np.isfinite(a.astype(np.float32)).all() and (a[2:] == a[1]).all()
    # the same cache feeds AVST as it is
    r = run_cli("export", "field.h5", "--layout", "avst", "-o", "feats", "--quiet")
    assert r.exit_code == 0, r.output
    assert np.load("feats/res18_14x14/" + desc_first_video(tmp_path) + ".npy").shape == (60, 512, 14, 14)


def test_method_table_shows_the_tested_commands():
    """docs/features.md's "Feature set of each method" commands are those tests/test_interop_e2e.py runs."""
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| method (code read)", text.index("## Feature set of each method")):]
    table = table[:table.index("\n\n")]
    shown = {}
    for row in table.splitlines()[2:]:
        method = row.split("|")[1].split("(")[0].strip().lower()
        shown[method] = [c for c in re.findall(r"`(featpipe [^`]*)`", row) if "..." not in c]
    tested = {"avst": "avst", "pstp-net": "pstp-net", "tspm": "tspm", "qa-tiger": "qa-tiger", "mccd": "mccd"}
    assert {m: shown[m] for m in tested} == {m: LAYOUT_COMMANDS[k] for m, k in tested.items()}
    assert shown["av-master"] == []


def desc_first_video(folder: Path) -> str:
    return sorted(p.stem for p in (folder / "videos").glob("*.mp4"))[0]


# -- the hints --------------------------------------------------------------------------------------
def _hints():
    seen = {}
    for lay in LAYOUTS.values():
        for f in lay.videos:
            seen.setdefault(f.extract, []).append((lay.name, f.folder, f.recipes, None))
        for t in lay.texts:
            seen.setdefault(t.extract, []).append((lay.name, t.folder, None, t.table))
    return seen


HINTS = _hints()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No weights anywhere, no downloads, the real model configs (no tiny variants)."""
    for var in ("FEATPIPE_OPENCLIP_CONFIGS", "FEATPIPE_TIMM_CONFIGS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from media import write_clip

    (tmp_path / "videos").mkdir()
    write_clip(tmp_path / "videos" / "a.mp4", seconds=1.0, fps=5)
    cache = tmp_path / "c.h5"
    with CacheWriter(cache, {"fps": 1.0, "seg_len": 1.0, "max_seconds": 60.0, "pad": "repeat"}) as w:
        w.start()
    q = tmp_path / "q.json"
    q.write_text(json.dumps([{"video_id": "a", "question_id": 1, "type": '["Audio", "Counting"]',
                              "question_content": "Is there a <Object> sound?", "templ_values": '["piano"]',
                              "question_deleted": 0, "anser": "yes"}]))
    return {"VIDEOS": tmp_path / "videos", "CACHE": cache, "Q.json": q}


def _argv(hint: str, paths: dict) -> list[str]:
    argv = shlex.split(hint)
    assert argv[0] == "featpipe", hint
    return [str(paths.get(a, a)) for a in argv[1:]]


@pytest.mark.parametrize("hint", sorted(HINTS))
def test_every_hint_parses_and_makes_its_folder(hint, offline):
    """Parsed by the CLI's own parser, built, and its outputs matched against each table entry that
    prints it; run, it stops only for the missing weights (one line), never for its syntax."""
    argv = _argv(hint, offline)
    command = cli.main.commands[argv[0]]
    params = command.make_context(argv[0], argv[1:]).params
    if argv[0] == "extract":
        options = ExtractOptions(tokens=params["tokens"], extra=tuple(params["extra"]))
        exts = [build(s, options) for s in params["visual"] + params["audio"]]
        check_options(exts, options)
        made = [(o.name, e.spec, tuple(o.shape)) for e in exts for o in e.outputs()]
        for layout, folder, recipes, _ in HINTS[hint]:
            assert any(all(any(src.matches(*m) for m in made) for src in r.sources) for r in recipes), \
                f"{layout} {folder}/: {hint} makes {made}"
    else:
        assert argv[0] == "encode-text" and params["field_tables"]
        tables = []
        for spec in params["encoders"]:
            enc = build_text_encoder(spec)
            tables += [(enc.name, spec, (enc.dim,)), (enc.name + "-qst", spec, (enc.dim,)),
                       (enc.name + "-words", spec, (enc.context_length, enc.dim)),
                       (enc.name + "-qaprompt", spec, (enc.dim,))]
        for layout, folder, _, table in HINTS[hint]:
            hits = [t[0] for t in tables if table.matches(*t, by_size=True)]
            # export takes the one table, or the -qst one among the question tables (export.resolve)
            assert len(hits) == 1 or [h for h in hits if h.endswith("-qst")], f"{layout} {folder}/: {hits}"
    r = run_cli(*argv)
    assert r.exit_code == 2, r.output
    error = [ln for ln in r.output.splitlines() if ln.startswith("featpipe: error:")]
    assert len(error) == 1 and "weights" in error[0] and "Usage" not in r.output, r.output


def test_tome14_is_the_full_spec(monkeypatch):
    """`tome14[:w]` builds `tome:vit_large_patch16_384[/w]`: same spec, outputs and identity."""
    from featpipe.decode import DecodeParams
    from featpipe.extractors.tome import ToMeExtractor
    from featpipe.run.plan import identity

    monkeypatch.delenv("FEATPIPE_TIMM_CONFIGS", raising=False)
    opts = ExtractOptions(extra=(("tome_r", "25"),))
    for short, full in (("tome14", "tome:vit_large_patch16_384"), ("tome14:random", "tome:vit_large_patch16_384/random")):
        a, b = build(short, opts), build(full, opts)
        assert type(a) is ToMeExtractor and a.spec == b.spec == full
        assert [(o.name, o.shape) for o in a.outputs()] == [(o.name, o.shape) for o in b.outputs()]
    a, b = build("tome14:random", opts), build("tome:vit_large_patch16_384/random", opts)
    out = a.outputs()[0]
    assert identity(a, out, DecodeParams(), None) == identity(b, out, DecodeParams(), None)
    assert a.outputs()[0].name == "tome14-vit_large_patch16_384-random" and a.outputs()[0].shape == (14, 1024)
    # weights: the spec's own first, then --weights tome=PATH, then a plain --weights
    assert build("tome14:random", ExtractOptions(weights="/folder/for/vggish")).weights == "random"
    assert build("tome14", ExtractOptions(weights_by=(("tome", "/w/vit.safetensors"),))).weights == "/w/vit.safetensors"
    assert build("tome14", ExtractOptions(weights="/w/vit.safetensors")).weights == "/w/vit.safetensors"
