"""Input discovery and per-process extractor reuse."""

from __future__ import annotations

import pytest

from featpipe.extractors.base import ExtractOptions
from featpipe.run.inputs import InputError, discover
from featpipe.run.loaded_extractors import get_extractor


def test_folders_lists_and_duplicates(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("a/00000001.mp4", "a/deep/00000002.MKV", "a/notes.txt.bak", "b.mp4", "other/00000001.mp4"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\nb.mp4\n\nother/00000001.mp4\nmissing.mp4\n")
    videos, rejects = discover([str(tmp_path / "a"), str(listing)])
    assert [v.video_id for v in videos] == ["00000001", "00000002", "b"]  # folder: recursive, by extension
    reasons = dict(rejects)
    assert "already used" in reasons[str(tmp_path / "other/00000001.mp4")]  # same stem, another file
    assert "does not exist" in reasons[str(tmp_path / "missing.mp4")]
    (tmp_path / "odd.bin").write_bytes(b"x")
    videos, _ = discover([str(tmp_path / "odd.bin")])  # named explicitly: kept, so it fails visibly
    assert [v.video_id for v in videos] == ["odd"]
    with pytest.raises(InputError, match="no such file"):
        discover([str(tmp_path / "nowhere")])


def test_extractors_load_once_per_process():
    a = get_extractor("priors", ExtractOptions())
    assert get_extractor("priors", ExtractOptions()) is a
    assert get_extractor("priors", ExtractOptions(batch_size=7)) is not a
