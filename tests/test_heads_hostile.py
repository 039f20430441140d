"""Head directories are input, not trusted: every malformed head (written here from a good one)
is refused by ``evaluate`` and ``predict`` with one ``featpipe: error:`` line and exit 2, before
any network is built; a head asking for ten million hidden units is refused under an address
space limit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from test_heads_support import planted_avqa, planted_clips

from featpipe.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("heads")
    qa, clips = planted_avqa(tmp, n_videos=20), planted_clips(tmp, n_videos=20)
    run = CliRunner().invoke
    out = {"qa": qa, "clips": clips}
    r = run(
        main,
        [
            "train-head",
            str(qa["cache"]),
            "--task",
            "avqa",
            "--train",
            str(qa["train"]),
            "--val",
            str(qa["val"]),
            "--epochs",
            "1",
            "-o",
            str(tmp / "avqa"),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    for model in ("mlp", "linear"):
        r = run(
            main,
            [
                "train-head",
                str(clips["cache"]),
                "--task",
                "classify",
                "--model",
                model,
                "--train",
                str(clips["train"]),
                "--epochs",
                "1",
                "-o",
                str(tmp / model),
                "--quiet",
            ],
        )
        assert r.exit_code == 0, r.output
    out.update(avqa=tmp / "avqa", mlp=tmp / "mlp", linear=tmp / "linear")
    return out


def _meta(edit):
    def apply(head: Path) -> None:
        meta = json.loads((head / "head.json").read_text())
        edit(meta)
        (head / "head.json").write_text(json.dumps(meta))

    return apply


def _text(text: str | bytes):
    def apply(head: Path) -> None:
        (head / "head.json").write_bytes(text if isinstance(text, bytes) else text.encode())

    return apply


def _weights(edit):
    def apply(head: Path) -> None:
        tensors = load_file(str(head / "weights.safetensors"))
        edit(tensors)
        save_file(tensors, str(head / "weights.safetensors"))

    return apply


def _first_2d(t: dict) -> str:
    return next(k for k, v in t.items() if v.ndim == 2)


def _truncate_weights(head: Path) -> None:
    w = head / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:200])


def _weights_dir(head: Path) -> None:
    (head / "weights.safetensors").unlink()
    (head / "weights.safetensors").mkdir()


MALFORMED = {  # name -> (good head, change); every one of them must be one line, exit 2
    "not json": ("avqa", _text("{not json")),
    "not utf-8": ("avqa", _text(b'{"format": "featpipe-head", "x": "\xff\xfe"}')),
    "a list": ("avqa", _text("[1, 2, 3]")),
    "nested 100k deep": ("avqa", _text("[" * 100_000 + "]" * 100_000)),
    "4,300-digit number": ("avqa", _text('{"format": "featpipe-head", "version": ' + "9" * 4400 + "}")),
    "version a string": ("avqa", _meta(lambda m: m.update(version="2"))),
    "no task": ("avqa", _meta(lambda m: m.pop("task"))),
    "unknown model": ("avqa", _meta(lambda m: m.update(model="gpt"))),
    "ten million hidden": ("avqa", _meta(lambda m: m["hparams"].update(hidden=10_000_000))),
    "hidden a string": ("mlp", _meta(lambda m: m["hparams"].update(hidden="big"))),
    "no dims": ("avqa", _meta(lambda m: m.pop("dims"))),
    "negative dim": ("avqa", _meta(lambda m: m["dims"].update(q=-5))),
    "answers truncated": ("avqa", _meta(lambda m: m.update(answers=m["answers"][:-1]))),
    "answers not strings": ("avqa", _meta(lambda m: m.update(answers=list(range(len(m["answers"])))))),
    "feature without a name": ("avqa", _meta(lambda m: m["features"][0].pop("name"))),
    "feature dims disagree": ("avqa", _meta(lambda m: m["features"][0].update(shape=[9]))),
    "question kind unknown": ("avqa", _meta(lambda m: m["question"].update(kind="magic"))),
    "bow vocabulary short": ("avqa", _meta(lambda m: m["question"].update(words=m["question"]["words"][:-2]))),
    "history not an object": ("avqa", _meta(lambda m: m.update(history=[1, 2]))),
    "labels truncated": ("mlp", _meta(lambda m: m.update(labels=m["labels"][:-1]))),
    "linear labels truncated": ("linear", _meta(lambda m: m.update(labels=m["labels"][:-1]))),
    "classifier dims features wrong": ("mlp", _meta(lambda m: m["dims"].update(features=[8, 6]))),
    "tensor missing": ("avqa", _weights(lambda t: t.pop(_first_2d(t)))),
    "tensor extra": ("mlp", _weights(lambda t: t.update(extra=torch.zeros(3)))),
    "tensor reshaped": ("mlp", _weights(lambda t: t.update({_first_2d(t): t[_first_2d(t)][:-1]}))),
    "tensor NaN": ("linear", _weights(lambda t: t["coef"].fill_(float("nan")))),
    "weights truncated": ("avqa", _truncate_weights),
    "weights a folder": ("mlp", _weights_dir),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_head_is_one_line(heads, tmp_path, name):
    base, change = MALFORMED[name]
    head = tmp_path / "h"
    shutil.copytree(heads[base], head)
    change(head)
    data = heads["qa" if base == "avqa" else "clips"]
    run = CliRunner().invoke
    for args in (
        ["evaluate", str(head), str(data["cache"]), "--test", str(data["test"])],
        [
            "predict",
            str(head),
            str(data["cache"]),
            "-o",
            str(tmp_path / "p.jsonl"),
            "--questions" if base == "avqa" else "--videos",
            str(data["test"]),
        ],
    ):
        r = run(main, args)
        assert r.exit_code == 2, (name, r.exit_code, r.output, r.exception)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("featpipe: error: "), (name, r.output)
        assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)


def test_the_good_heads_still_load(heads, tmp_path):
    run = CliRunner().invoke
    for base in ("avqa", "mlp", "linear"):
        data = heads["qa" if base == "avqa" else "clips"]
        r = run(main, ["evaluate", str(heads[base]), str(data["cache"]), "--test", str(data["test"])])
        assert r.exit_code == 0, (base, r.output)


def test_ten_million_hidden_units_cost_nothing(heads, tmp_path):
    # before building anything the head is checked against its weights' shapes: under a 1 GiB
    # address-space allowance it is refused, where building it first took 15 GB
    from test_hostile_media import run_limited

    head = tmp_path / "h"
    shutil.copytree(heads["avqa"], head)
    _meta(lambda m: m["hparams"].update(hidden=10_000_000))(head)
    out = run_limited(
        f"""
        from featpipe.heads import qa
        from featpipe.heads.data import HeadError
        try:
            qa.load_head({str(head)!r})
            print(json.dumps({{"refused": None}}))
        except HeadError as exc:
            print(json.dumps({{"refused": str(exc)}}))
        """,
        budget_mb=1024,
        preload="import torch, featpipe.heads.qa",
    )
    assert out["refused"] and "head.json describes" in out["refused"], out
