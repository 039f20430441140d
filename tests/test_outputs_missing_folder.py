"""Outputs into a folder that does not exist yet (issue #22): ``evaluate --report/--plot``, ``predict -o``
and ``merge -o`` make it (before the work, so a path that cannot be written fails first, in one line)."""

from __future__ import annotations

from click.testing import CliRunner
from test_heads_support import planted_clips

from featpipe.cli import main


def test_outputs_into_missing_folders_are_made(tmp_path):
    files = planted_clips(tmp_path, n_videos=40)
    run = CliRunner().invoke
    head = tmp_path / "h"
    r = run(
        main,
        [
            "train-head",
            str(files["cache"]),
            "--task",
            "classify",
            "--model",
            "linear",
            "--train",
            str(files["train"]),
            "-o",
            str(head),
            "--quiet",
            "--epochs",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output

    def evaluate(*extra: str):
        return run(main, ["evaluate", str(head), str(files["cache"]), "--test", str(files["test"]), *extra])

    new = tmp_path / "new" / "deeper"
    r = evaluate("--report", str(new / "r.json"), "--plot", str(new / "fig" / "r.png"))
    assert r.exit_code == 0, r.output
    assert (new / "r.json").stat().st_size > 0 and (new / "fig" / "r.png").stat().st_size > 0
    r = run(
        main,
        [
            "predict",
            str(head),
            str(files["cache"]),
            "--videos",
            str(files["test"]),
            "-o",
            str(tmp_path / "p" / "q" / "out.jsonl"),
        ],
    )
    assert r.exit_code == 0 and (tmp_path / "p" / "q" / "out.jsonl").exists(), r.output
    r = run(main, ["merge", str(files["cache"]), "-o", str(tmp_path / "m" / "n" / "merged.h5")])
    assert r.exit_code == 0 and (tmp_path / "m" / "n" / "merged.h5").stat().st_size > 0, r.output
    # a folder that cannot be made (a file is in the way) fails before the work, in one line
    (tmp_path / "plain").write_text("a file")
    r = evaluate("--report", str(tmp_path / "plain" / "r.json"))
    assert r.exit_code == 2 and "cannot make the folder" in r.output and len(r.output.strip().splitlines()) == 1, (
        r.output
    )
