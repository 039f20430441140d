"""Hostile or unlucky input files are one line each, never a traceback: question files (deep
nesting, 4,300-digit numbers, a quoted ``question_deleted``), list files that are not UTF-8,
file names that are not UTF-8, ``synth --seconds nan``. Every file is written here."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from featpipe.avqa import AvqaFormatError, load_questions
from featpipe.cli import main
from featpipe.run.inputs import InputError, discover

GOOD = {
    "video_id": "00000001",
    "question_id": 7,
    "type": '["Audio", "Counting"]',
    "question_content": "Is the <Object> playing?",
    "templ_values": '["piano"]',
    "question_deleted": 0,
    "anser": "yes",
}


def _one_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.output.count("\n") == 1 and r.output.startswith("featpipe: error: "), r.output
    return r.output


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ("[" + "9" * 4400 + "]", "not valid JSON"),
        (json.dumps([dict(GOOD, type="[" * 50_000 + "]" * 50_000)]), "'type' is not a JSON-encoded list"),
        (json.dumps([dict(GOOD, templ_values="[" + "1" * 5000 + "]")]), "'templ_values' is not a JSON-encoded list"),
        (json.dumps([dict(GOOD, type='[["Audio"], "Counting"]')]), "unknown question type"),
        (json.dumps([dict(GOOD, question_deleted="maybe")]), "question_deleted must be 0 or 1"),
        (json.dumps([dict(GOOD, question_deleted=[0])]), "question_deleted must be 0 or 1"),
    ],
)
def test_a_hostile_question_file_is_one_line(tmp_path, text, words):
    path = tmp_path / "q.json"
    path.write_text(text)
    with pytest.raises(AvqaFormatError, match=words):
        load_questions(path)
    with pytest.raises(AvqaFormatError) as info:
        load_questions(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400 + len(str(path))  # one short line


def test_a_quoted_question_deleted_is_read_as_its_number(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(
        json.dumps(
            [
                dict(GOOD, question_deleted="0"),
                dict(GOOD, question_id=8, question_deleted="1"),
                dict(GOOD, question_id=9, question_deleted=1),
            ]
        )
    )
    assert [q.question_id for q in load_questions(path)] == [7]  # "0" kept (was silently dropped), "1" dropped


def test_a_list_file_that_is_not_utf8_is_one_line(tmp_path):
    lst = tmp_path / "videos.txt"
    lst.write_bytes(b"a.mp4\n" + "b\u00e9.mp4".encode("latin-1") + b"\n")
    with pytest.raises(InputError, match="line 2 is not UTF-8"):
        discover([str(lst)])
    r = CliRunner().invoke(main, ["extract", str(lst), "-o", str(tmp_path / "c.h5"), "--audio", "priors", "--quiet"])
    assert "line 2 is not UTF-8" in _one_line(r)


def test_a_file_name_that_is_not_utf8_is_rejected_alone(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "good.mp4").write_bytes(b"x")
    bad = os.path.join(os.fsencode(folder), b"b\xe9.mp4")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    videos, rejects = discover([str(folder)])
    assert [v.video_id for v in videos] == ["good"]
    assert len(rejects) == 1 and rejects[0][1] == "its name is not UTF-8; rename it"
    rejects[0][0].encode("utf-8")  # the reason can be printed and stored


@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "1e12"])
def test_synth_seconds_must_be_a_real_length(tmp_path, seconds):
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--videos", "1", "--seconds", seconds])
    assert "seconds must be >= 2 (instruments need room to enter and leave) and <= 3600" in _one_line(r)
