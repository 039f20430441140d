"""The client reads open_clip's facts as data (featpipe.models.clip_facts): they equal open_clip's own
for every installed config and tag, and planning a ``featpipe extract`` run never imports open_clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from clip_helpers import FAMILIES, save_weights, write_config_folder

ROOT = Path(__file__).resolve().parents[1]


# Each light computation runs in a fresh interpreter: the light path is the one taken where
# open_clip is not imported.
def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)


_FACTS = r"""
import json, sys
from featpipe.models import clip_facts
from featpipe.models.clip_config import ClipSource

table = clip_facts.pretrained()
out = {"names": clip_facts.model_names(), "defaults": clip_facts.preprocess_defaults(), "configs": {},
       "preprocess": {}, "towers": {}}
for name in out["names"]:
    out["configs"][name] = clip_facts.model_config(name)
    out["towers"][name] = clip_facts.tower_from_config(out["configs"][name])
    for tag in table.list_pretrained_tags_by_model(name) + ["random"]:
        src = ClipSource.parse("clip:" + name + "/" + tag, name + "/" + tag)
        out["preprocess"][name + "/" + tag] = [src.preprocess_cfg(), src.quick_gelu_mismatch()]
out["loaded"] = [m for m in ("open_clip", "torchvision", "timm") if m in sys.modules]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """Every fact, computed without open_clip, for the installed configs plus the tests' tiny ones."""
    folder = write_config_folder(tmp_path_factory.mktemp("facts"))
    res = _run(_FACTS, {"FEATPIPE_OPENCLIP_CONFIGS": str(folder)})
    assert res.returncode == 0, res.stderr
    return folder, json.loads(res.stdout)


def _norm(value):
    return json.loads(json.dumps(value))  # tuples as lists, as the light facts came back


def test_facts_equal_open_clips_own_for_every_config_and_tag(light, monkeypatch):
    folder, facts = light
    assert facts["loaded"] == []  # and none of it imported open_clip
    monkeypatch.setenv("FEATPIPE_OPENCLIP_CONFIGS", str(folder))
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from featpipe.models.clip_config import ClipSource, normalise_preprocess, register_configs

    register_configs()
    assert set(FAMILIES) <= set(facts["names"])
    assert [n for n in open_clip.list_models() if n in facts["names"]] == facts["names"]
    assert facts["defaults"] == _norm(asdict(PreprocessCfg()))
    for name in facts["names"]:
        assert facts["configs"][name] == _norm(open_clip.get_model_config(name)), name
    assert len(facts["preprocess"]) > 200
    for key, (pre, warning) in facts["preprocess"].items():
        name, _, tag = key.partition("/")
        tag_cfg = {} if tag == "random" else open_clip.get_pretrained_cfg(name, tag)
        cfg = merge_preprocess_dict(asdict(PreprocessCfg()), tag_cfg)
        cfg["size"] = open_clip.get_model_config(name)["vision_cfg"].get("image_size", 224)
        assert pre == _norm(normalise_preprocess(cfg)), key
        assert warning == ClipSource.parse(f"clip:{key}", key).quick_gelu_mismatch(), key


def test_tower_from_config_equals_the_meta_build(light):
    """Where the config alone names the tower, its family and width are what open_clip builds."""
    from featpipe.models.clip_towers import describe_tower

    _, facts = light
    known = {n: t for n, t in facts["towers"].items() if t is not None}
    assert {"ViT-B-32", "ViT-L-14-336-quickgelu", "RN50-quickgelu", "tiny-vit", "tiny-rn"} <= set(known)
    assert facts["towers"]["tiny-siglip"] is None and facts["towers"]["tiny-convnext"] is None  # timm: built
    for name, (family, dim) in known.items():
        if name.startswith(("ViT-B", "RN50", "tiny-")):  # one build per kind of config keeps this short
            info = describe_tower(facts["configs"][name])
            assert (info.family, info.embed_dim) == (family, dim), name


_PLAN = r"""
import sys
from click.testing import CliRunner
from featpipe import cli
res = CliRunner().invoke(cli.main, sys.argv[1:], catch_exceptions=False)
print(res.output)
print("EXIT", res.exit_code, "LOADED", sorted(m for m in ("open_clip", "torchvision", "timm") if m in sys.modules))
"""


def test_featpipe_extract_never_imports_open_clip_on_the_client(clips, tmp_path):
    """The client plans (configs, preprocessing, weights, outputs) from data; the workers build the
    model through open_clip and the stored rows are what a run always stored."""
    folder = write_config_folder(tmp_path / "cfg")
    ckpt = save_weights("tiny-vit", tmp_path / "w.safetensors", seed=2)
    video = sorted(clips.glob("*.mp4"))[0]
    args = [
        "extract",
        str(video),
        "-o",
        str(tmp_path / "c.h5"),
        "--workers",
        "1",
        "--quiet",
        "--visual",
        f"clip:tiny-vit/{ckpt}",
        "--visual",
        "clip:tiny-rn/random",
    ]
    res = subprocess.run(
        [sys.executable, "-c", _PLAN, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "FEATPIPE_OPENCLIP_CONFIGS": str(folder),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert "EXIT 0 LOADED []" in res.stdout, res.stdout + res.stderr
    from featpipe import open_cache

    with open_cache(tmp_path / "c.h5") as c:
        got = c.get(video.stem, "clip-tiny-vit-w")
        assert got.data.shape[1] == FAMILIES["tiny-vit"]["embed_dim"]
        assert c.info("clip-tiny-rn-random").attrs["family"] == "ModifiedResNet"


def test_missing_weights_is_one_line_without_open_clip():
    res = _run(
        "import sys\nfrom featpipe.extractors import build\n"
        "try:\n    build('clip:ViT-L-14-336-quickgelu/openai').check()\n"
        "except Exception as exc:\n    print(type(exc).__name__, '|', exc)\n"
        "print('LOADED', 'open_clip' in sys.modules)",
        {"HF_HUB_OFFLINE": "1"},
    )
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "LOADED False", res.stdout + res.stderr
    assert len(lines) == 2 and lines[0].startswith("WeightsError | ") and "create_model" in lines[0]
