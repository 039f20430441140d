"""Shared fixtures: small PyAV clips and a tiny open_clip model registered by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/media.py

from media import write_clip  # noqa: E402

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture
def tiny_clip(tmp_path_factory, monkeypatch) -> str:
    """Register ``tiny-clip`` with open_clip (client and workers, via FEATPIPE_OPENCLIP_CONFIGS)."""
    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    monkeypatch.setenv("FEATPIPE_OPENCLIP_CONFIGS", str(folder))
    return "tiny-clip"


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    """A folder of three good clips of 2, 3 and 4 s (stereo, 44.1 kHz, 10 fps)."""
    folder = tmp_path_factory.mktemp("clips")
    for i, secs in enumerate((2.0, 3.0, 4.0)):
        write_clip(folder / f"clip{i}.mp4", seconds=secs, fps=10, freq=220.0 * (i + 1))
    return folder
