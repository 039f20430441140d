"""A study's report, computed from its prediction files alone: study.json, .md, .png, .html.

Every number comes from ``OUT/runs/<arm>/seed-<s>.jsonl`` and the test files' answers, so anyone
can recompute it (``tests/test_study.py`` does). Tables follow the field's layout (Audio: Count,
Comp, Avg; Visual: Count, Loc, Avg; Audio-Visual: Exist, Count, Loc, Comp, Temp, Avg; All), one
table per test file (MUSIC-AVQA-R: head, tail and all), mean accuracy and 95% interval per cell.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featpipe.avqa import GROUPS, QUESTION_TYPES

from . import stats
from .arms import QUESTION_ONLY

_SHORT = {"Counting": "Count", "Comparative": "Comp", "Location": "Loc", "Existential": "Exist", "Temporal": "Temp"}
_GROUP = {"Audio": "A", "Visual": "V", "Audio-Visual": "AV"}
COLUMNS: tuple[tuple[str, str], ...] = tuple(
    col
    for g in GROUPS
    for col in [(f"{g}/{t}", f"{_GROUP[g]} {_SHORT[t]}") for gg, t in QUESTION_TYPES if gg == g]
    + [(g, f"{_GROUP[g]} Avg")]
) + (("All", "All"),)


def read_predictions(out: Path, arm: str, seed: int) -> dict[int, str]:
    path = out / "runs" / arm / f"seed-{seed}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(r["question_id"]): r["answer"] for r in rows}


def correctness(out: Path, order: Sequence[str], seeds: int, questions: Sequence[Any]) -> dict[str, np.ndarray]:
    """``{arm: (seeds, questions) bool}`` from the prediction files (a missing answer counts wrong)."""
    result = {}
    for arm in order:
        rows = []
        for s in range(seeds):
            pred = read_predictions(out, arm, s)
            rows.append([pred.get(q.question_id) == q.answer for q in questions])
        result[arm] = np.array(rows, dtype=bool)
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _cell(c: dict) -> str:
    if c["accuracy"] is None:
        return "-"
    lo, hi = c["interval"]
    return f"{_pct(c['accuracy'])} [{_pct(lo)}, {_pct(hi)}]"


def _diff(c: dict) -> str:
    if c["difference"] is None:
        return "-"
    lo, hi = c["interval"]
    mark = " *" if c["significant"] else ""
    return f"{100 * c['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{mark}"


def markdown(study: dict) -> str:
    head = "| arm | " + " | ".join(lab for _, lab in COLUMNS) + " |"
    rule = "| --- " * (len(COLUMNS) + 1) + "|"
    lines = [
        f"# Study: {', '.join(a['name'] for a in study['arms'])} (baseline {study['baseline']})",
        "",
        f"Cache `{study['cache']}`; head `{study['head']}`; seeds {study['seeds']}; "
        f"{study['statistics_method']['level']:.0%} intervals over seeds and questions (docs/study.md).",
        "",
    ]
    for label, t in study["tests"].items():
        lines += [f"## {label}: accuracy (%), mean [95% interval]", "", head, rule]
        for arm, cells in t["arms"].items():
            lines.append(f"| {arm} | " + " | ".join(_cell(cells[k]) for k, _ in COLUMNS) + " |")
        n = next(iter(t["arms"].values()))
        lines.append("| n | " + " | ".join(str(n[k]["n"]) for k, _ in COLUMNS) + " |")
        lines += [
            "",
            f"## {label}: difference from {study['baseline']} (points), mean [95% interval], * = interval excludes 0",
            "",
            head,
            rule,
        ]
        for arm, cells in t["vs_baseline"].items():
            lines.append(f"| {arm} | " + " | ".join(_diff(cells[k]) for k, _ in COLUMNS) + " |")
        lines.append("")
    weights = {a: w for a, w in study["layer_weights"].items() if w}
    if weights:
        lines += ["## Learned layer weights (softmax, mean over seeds)", ""]
        for arm, per_feature in weights.items():
            for feat, w in per_feature.items():
                lines.append(
                    f"- {arm} / {feat}: " + ", ".join(f"L{n}: {x:.3f}" for n, x in zip(w["layers"], w["mean"]))
                )
        lines.append("")
    return "\n".join(lines)


def figure(study: dict, path: Path) -> None:
    """Per question type (and group, All), the arms side by side with their intervals; one panel per test file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = study["tests"]
    fig, axes = plt.subplots(len(tests), 1, figsize=(14, 3.6 * len(tests)), squeeze=False)
    for ax, (label, t) in zip(axes[:, 0], tests.items()):
        arms = list(t["arms"])
        width = 0.8 / len(arms)
        x = np.arange(len(COLUMNS))
        for i, arm in enumerate(arms):
            cells = [t["arms"][arm][k] for k, _ in COLUMNS]
            mean = np.array([100 * (c["accuracy"] or 0) for c in cells])
            lo = np.array([100 * c["interval"][0] if c["interval"] else 0 for c in cells])
            hi = np.array([100 * c["interval"][1] if c["interval"] else 0 for c in cells])
            ax.bar(
                x + (i - (len(arms) - 1) / 2) * width, mean, width, label=arm, yerr=[mean - lo, hi - mean], capsize=2
            )
        ax.set_xticks(x, [lab for _, lab in COLUMNS], fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{label}: mean accuracy over seeds, 95% interval", fontsize=10)
        ax.legend(fontsize=7, ncol=min(6, len(arms)), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def html_page(study: dict, md_tables: str, png: bytes) -> str:
    """One self-contained page: the tables (from the markdown) and the figure as a data: URL."""
    body, in_table = [], False
    for line in md_tables.splitlines():
        if line.startswith("|") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if line.startswith("|"):
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = min(3, len(line) - len(line.lstrip("#")))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    img = base64.b64encode(png).decode()
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>featpipe study</title><style>'
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
        "td,th{border:1px solid #bbb;padding:2px 5px;text-align:right}td:first-child{text-align:left}</style>"
        "</head><body>\n" + "\n".join(body) + f'\n<h2>Figure</h2>\n<img id="figure" alt="accuracy per question type" '
        f'onload="this.dataset.width=this.naturalWidth" src="data:image/png;base64,{img}">\n</body></html>\n'
    )


def _layer_weights(out: Path, order: Sequence[str], seeds: int, plan: dict) -> dict:
    arms = {a["name"]: a["features"] for a in plan["arms"]}
    result = {}
    for arm in order:
        per = {}
        records = [json.loads((out / "runs" / arm / f"seed-{s}.json").read_text()) for s in range(seeds)]
        layered = [f for f in arms.get(arm, []) if "@" not in f and plan["features"][f]["layers"]]
        for stream in ("a", "v"):
            names = [f for f in layered if plan["features"][f]["role"] == ("audio" if stream == "a" else "visual")]
            for i, feat in enumerate(names):
                ws = [r["layer_weights"][stream][i] for r in records]
                per[feat] = {
                    "layers": plan["features"][feat]["layers"],
                    "per_seed": ws,
                    "mean": [float(x) for x in np.mean(ws, axis=0)],
                }
        result[arm] = per
    return result


def write_study(
    out: Path,
    plan: dict,
    inputs: Any,
    order: Sequence[str],
    baseline: str,
    seeds: int,
    labels: dict[str, str],
    echo: Callable[[str], Any] | None = print,
) -> dict:
    """Recompute everything from the prediction files and write the report files."""
    questions = inputs.questions["test"]
    correct = correctness(out, order, seeds, questions)
    index = {q.question_id: i for i, q in enumerate(questions)}
    tests = {}
    for label, ids in inputs.test_sets.items():
        idx = np.array([index[i] for i in ids], dtype=np.int64)
        types = [f"{questions[i].group}/{questions[i].qtype}" for i in idx]
        tests[label] = stats.study_statistics(types, {a: c[:, idx] for a, c in correct.items()}, baseline)
        tests[label]["file"] = labels[label]
        tests[label]["n_questions"] = len(idx)
    method = next(iter(tests.values()))["method"]
    study = {
        **{
            k: plan[k]
            for k in (
                "format",
                "version",
                "cache",
                "head",
                "arms",
                "baseline",
                "seeds",
                "hparams",
                "features",
                "files",
                "question_encoding",
            )
        },
        "question_only": QUESTION_ONLY,
        "dropped_questions": inputs.dropped,
        "runs": {
            a: [json.loads((out / "runs" / a / f"seed-{s}.json").read_text()) for s in range(seeds)] for a in order
        },
        "layer_weights": _layer_weights(out, order, seeds, plan),
        "statistics_method": method,
        "tests": {k: {kk: vv for kk, vv in v.items() if kk != "method"} for k, v in tests.items()},
    }
    with open(out / "predictions.jsonl", "w") as fh:
        for a in order:
            for s in range(seeds):
                fh.write((out / "runs" / a / f"seed-{s}.jsonl").read_text())
    (out / "study.json").write_text(json.dumps(study, indent=1))
    md = markdown(study)
    (out / "study.md").write_text(md)
    figure(study, out / "study.png")
    (out / "study.html").write_text(html_page(study, md, (out / "study.png").read_bytes()))
    if echo is not None:
        echo(md)
        echo(f"(report: {out / 'study.md'}, {out / 'study.html'}; data: {out / 'study.json'})")
    return study
