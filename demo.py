"""``featpipe demo``: the whole product offline, end to end, in a few minutes on 2 cores.

Application layer, beside cli.py (installed as ``featpipe.demo``): it drives every stage, so it
lives above both featpipe/ and heads/ rather than inside heads/, which only reads the cache.

1. ``featpipe synth``: synthetic music videos with MUSIC-AVQA questions whose answers are exact;
2. ``featpipe extract``: the weight-free ``priors`` and ``motion`` features (and CLIP, OpenL3, CLAP
   when their weights are on this machine), on a local Dask cluster;
3. ``featpipe encode-text`` with CLIP's text encoder when CLIP's weights are there;
4. the AVQA head and the question-only baseline trained on the cache, evaluated on the test split,
   the per-type table printed and a PNG written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# The stages are imported when the demo runs, so that the CLI can read DemoConfig's defaults
# without loading the pipeline.

OPTIONAL_VISUAL = ("clip:ViT-B-32/laion2b_s34b_b79k",)
OPTIONAL_AUDIO = ("openl3:mel256/music/512", "clap:laion/larger_clap_music")


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("featpipe-demo")
    # Many short videos: the AVQA head is limited by how many questions it sees, and questions per
    # video hardly depend on the length, so 900 x 4 s (16k questions) teaches it far more than
    # 120 x 10 s (2.3k) for about 3x the synthesis and extraction time (docs/heads.md, Measured).
    videos: int = 900
    seconds: float = 4.0
    seed: int = 0
    workers: int = 2
    pretrained: bool = True  # use CLIP/OpenL3/CLAP where their weights are present


def available_specs(specs: tuple[str, ...], echo: Callable[[str], Any]) -> tuple[str, ...]:
    """The specs whose weights are present here; the others are named and skipped."""
    from featpipe import extractors
    from featpipe.extractors import ExtractOptions, WeightsError

    kept = []
    for spec in specs:
        try:
            extractors.build(spec, ExtractOptions()).check()
            kept.append(spec)
        except (WeightsError, extractors.ExtractorError) as exc:
            reason = str(exc).split(";")[0].removeprefix(f"{spec}: ")
            echo(f"      skipping {spec}: {reason}")
    return tuple(kept)


def run_demo(cfg: DemoConfig, echo: Callable[[str], Any] = print) -> dict:
    """Run the demo; returns the evaluation report (head and baseline tables)."""
    from featpipe.heads.api import run_avqa_experiment
    from featpipe.run import ExtractConfig, run_extract
    from featpipe.synth import make_dataset
    from featpipe.synth.report import format_report

    data = cfg.out / "data"
    if (data / "avqa-test.json").is_file() and (data / "videos").is_dir():
        echo(f"[1/4] reusing the synthetic set in {data}")
    else:
        echo(f"[1/4] synthesising {cfg.videos} videos of {cfg.seconds:g} s in {data} ...")
        report = make_dataset(data, cfg.videos, seed=cfg.seed, seconds=cfg.seconds, workers=cfg.workers)
        echo("      " + format_report(report).splitlines()[0])
    visual, audio = ("motion",), ("priors",)
    if cfg.pretrained:
        echo("      looking for pretrained weights (optional) ...")
        visual += available_specs(OPTIONAL_VISUAL, echo)
        audio += available_specs(OPTIONAL_AUDIO, echo)
    cache = cfg.out / "cache.h5"
    echo(f"[2/4] extracting {', '.join(visual + audio)} into {cache} on {cfg.workers} Dask workers ...")
    summary = run_extract(ExtractConfig(inputs=[str(data / "videos")], cache=cache, visual=visual, audio=audio,
                                        workers=cfg.workers))
    echo(f"      done {len(summary.done)}, skipped {len(summary.skipped)}, failed {len(summary.failed)} "
         f"in {summary.seconds:.1f} s")
    clip_specs = [s for s in visual if s.startswith("clip:")]
    if clip_specs:
        from featpipe.text import encode_texts_into_cache

        echo("[3/4] encoding the questions with CLIP's text encoder ...")
        encode_texts_into_cache(cache, clip_specs, questions=[data / f"avqa-{s}.json" for s in ("train", "val", "test")])
    else:
        echo("[3/4] no text encoder weights: the heads encode questions from their templates and slot values")
    echo("[4/4] training the AVQA head and the question-only baseline ...")
    result = run_avqa_experiment(cache, data / "avqa-train.json", data / "avqa-val.json", data / "avqa-test.json",
                                 cfg.out / "results", seed=cfg.seed, echo=echo, threads=1)
    if summary.failed:
        raise RuntimeError(f"{len(summary.failed)} videos failed to extract; see {summary.report}")
    return result
