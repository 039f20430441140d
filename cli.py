"""featpipe command line: a thin click layer over featpipe/ and heads/.

Each command parses its options and calls one library function; exit codes: 0 success,
1 some items failed (the rest were committed), 2 usage or setup errors (bad spec, missing
weights, unusable cache).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


DEMO_VIDEOS, DEMO_SECONDS = 900, 4.0  # heads/demo.py DemoConfig explains the choice


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"featpipe: error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="featpipe")
def main() -> None:
    """featpipe: aligned audio-visual embedding caches for music videos, and heads that train on them."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "cache", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Cache file (.h5) to create or extend.")
@click.option("--visual", multiple=True, metavar="SPEC", help="Visual extractor spec, e.g. clip:ViT-B-32/openai or motion.")
@click.option("--audio", multiple=True, metavar="SPEC", help="Audio extractor spec, e.g. priors or openl3:mel256/music/512.")
@click.option("--fps", default=1.0, show_default=True, help="Segments per second (MUSIC-AVQA uses 1).")
@click.option("--max-seconds", type=float, default=None,
              help="Fix every video to this many seconds: longer ones are cut, shorter ones padded (see --pad).")
@click.option("--pad", type=click.Choice(["repeat", "zero"]), default="repeat", show_default=True,
              help="How --max-seconds pads short videos: repeat the last segment (as MUSIC-AVQA) or zeros.")
@click.option("--workers", default=2, show_default=True,
              help="Local Dask worker processes (ignored with --scheduler; with --device cuda: one per GPU).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Use a running Dask scheduler, e.g. tcp://host:8786.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", default=32, show_default=True, help="Frames or windows per model call.")
@click.option("--tokens", is_flag=True, help="Also store patch tokens of visual models that have them.")
@click.option("--weights", default=None, metavar="PATH", help="Weight file for extractors that take one (e.g. OpenL3).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=None, help="Storage type (default float16).")
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Extractor option, e.g. --set native=1.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--video-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="Per-video time limit: SECONDS + --video-timeout-scale x the duration; a video past it is "
                   "failed and its worker restarted. 0: no limit.")
@click.option("--video-timeout-scale", type=float, default=10.0, show_default=True, metavar="FACTOR",
              help="Seconds added to the time limit per second of video.")
@click.option("--max-in-flight", type=int, default=None, metavar="N",
              help="Videos submitted and not yet committed at once (default: two per worker thread).")
@click.option("--min-decoded", type=click.FloatRange(0, 1), default=0.5, show_default=True, metavar="SHARE",
              help="Fail a video when a stream decodes less than this share of the duration its file states.")
@click.option("--max-bad-packets", type=click.FloatRange(0, 1), default=0.05, show_default=True, metavar="SHARE",
              help="Fail a video when more than this share of a stream's packets cannot be decoded.")
@click.option("--video-stream", type=int, default=None, metavar="INDEX",
              help="Stream index to decode (default: the best video stream that is not a cover picture).")
@click.option("--audio-stream", type=int, default=None, metavar="INDEX",
              help="Stream index to decode (default: the default audio stream, else the best).")
def extract(inputs, cache, visual, audio, fps, max_seconds, pad, workers, scheduler, device, batch_size, tokens,
            weights, dtype, extra, quiet, video_timeout, video_timeout_scale, max_in_flight, min_decoded,
            max_bad_packets, video_stream, audio_stream) -> None:
    """Extract features of INPUTS (files, folders, or .txt lists of paths) into one cache."""
    from featpipe.runner import run

    sys.exit(run(inputs=list(inputs), cache=cache, visual=visual, audio=audio, fps=fps, max_seconds=max_seconds,
                 pad=pad, workers=workers, scheduler=scheduler, device=device, batch_size=batch_size, tokens=tokens,
                 weights=weights, dtype=dtype, extra=extra, quiet=quiet, video_timeout=video_timeout,
                 video_timeout_scale=video_timeout_scale, max_in_flight=max_in_flight,
                 decode_options={"min_decoded": min_decoded, "max_bad_packets": max_bad_packets,
                                 "video_stream": video_stream, "audio_stream": audio_stream}))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New cache to write (must not exist).")
def merge(inputs, output) -> None:
    """Merge caches with the same timeline into a new one (shards of one extraction; later records win)."""
    from featpipe.cache import CacheError
    from featpipe.merge import merge_caches

    try:
        s = merge_caches(list(inputs), output)
    except CacheError as exc:
        _fail(str(exc))
    click.echo(f"{s.output}: {s.videos} videos from {s.records} records, features {', '.join(s.features) or 'none'}"
               f", {s.texts} text embeddings")


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(cache: str, as_json: bool) -> None:
    """Show a cache's features, dimensions, counts, timelines and provenance."""
    from featpipe.cache import CacheError
    from featpipe.describe import describe, format_description

    try:
        desc = describe(cache)
    except CacheError as exc:
        _fail(str(exc))
    click.echo(json.dumps(desc, indent=2) if as_json else format_description(desc))


@main.command()
def models() -> None:
    """List the extractor specs featpipe knows."""
    from featpipe.extractors import available

    for name, cls in available().items():
        click.echo(f"{cls.spec_help or name:45s} {cls.summary}")
        for ex in cls.examples:
            click.echo(f"    e.g. {ex}")


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--videos", default=200, show_default=True, help="Number of videos to generate.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same questions, scenes and audio.")
@click.option("--seconds", default=10.0, show_default=True, help="Length of each video.")
@click.option("--workers", default=1, show_default=True, help="Processes rendering videos.")
@click.option("--no-videos", is_flag=True, help="Write only the question and scene JSON files.")
def synth(out: Path, videos: int, seed: int, seconds: float, workers: int, no_videos: bool) -> None:
    """Generate synthetic MUSIC-AVQA videos and questions with exact answers into OUT."""
    from featpipe.synth import SynthError, format_report, make_dataset

    try:
        report = make_dataset(out, videos=videos, seed=seed, seconds=seconds, workers=workers,
                              write_videos=not no_videos)
    except SynthError as exc:
        _fail(str(exc))
    click.echo(format_report(report))


def _features(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


@main.command("train-head")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--task", type=click.Choice(["avqa", "classify"]), required=True)
@click.option("--train", "train_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="MUSIC-AVQA JSON (avqa) or video_id,label CSV (classify).")
@click.option("--val", "val_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation file for early stopping (default: 10% of the training videos).")
@click.option("--features", multiple=True, metavar="NAME[,NAME]", help="Cached features to use (default: all).")
@click.option("--model", type=click.Choice(["linear", "mlp", "attention"]), default="mlp", show_default=True,
              help="Classifier kind (classify only).")
@click.option("--fusion", type=click.Choice(["concat", "gated"]), default=None, help="Feature fusion (mlp, attention).")
@click.option("--question", default="auto", show_default=True,
              help="AVQA question embedding: auto, bow, or a cached text-encoder name.")
@click.option("--no-baseline", is_flag=True, help="AVQA: skip the question-only baseline.")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=int, default=None, help="Maximum epochs.")
@click.option("--patience", type=int, default=None, help="Early-stopping patience in epochs.")
@click.option("--lr", type=float, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--hidden", type=int, default=None, help="Hidden width.")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False), help="Head directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_head_cmd(cache, task, train_file, val_file, features, model, fusion, question, no_baseline, seed, epochs,
                   patience, lr, batch_size, hidden, out, quiet) -> None:
    """Train a head on CACHE and save it to a directory."""
    from heads.api import train_head
    from heads.data import HeadError

    hp = {k: v for k, v in {"max_epochs": epochs, "patience": patience, "lr": lr, "batch_size": batch_size,
                            "hidden": hidden, "fusion": fusion}.items() if v is not None}
    try:
        hists = train_head(cache, task, train_file, val_file, _features(features), out, seed=seed, model=model,
                           question=question, hparams=hp, baseline=not no_baseline, progress=not quiet)
    except HeadError as exc:
        _fail(str(exc))
    for name, h in hists.items():
        best = next((e for e in h["epochs"] if e["epoch"] == h["best_epoch"]), {})
        acc = best.get("val_acc", h.get("val_acc"))
        click.echo(f"{name}: kept epoch {h['best_epoch']} of {len(h['epochs'])}"
                   + (f", validation accuracy {100 * acc:.2f}%" if acc is not None else ""))
    click.echo(f"saved {out}")


@main.command("evaluate")
@click.argument("head", type=click.Path(exists=True, file_okay=False))
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--test", "test_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the figure (PNG).")
def evaluate_cmd(head, cache, test_file, report, plot) -> None:
    """Score HEAD on a test file, with features from CACHE."""
    from heads.api import evaluate
    from heads.data import HeadError

    try:
        result = evaluate(head, cache, test_file, report=report, plot=plot)
    except HeadError as exc:
        _fail(str(exc))
    if result["task"] == "avqa":
        click.echo(result["table_text"])
        click.echo(f"({result['average_definition']})")
    else:
        m = result["metrics"]
        click.echo(f"accuracy {100 * m['accuracy']:.2f}%  macro-F1 {100 * m['macro_f1']:.2f}%  ({m['n']} videos)")


@main.command("predict")
@click.argument("head", type=click.Path(exists=True, file_okay=False))
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--questions", type=click.Path(exists=True, dir_okay=False), default=None, help="MUSIC-AVQA JSON.")
@click.option("--videos", type=click.Path(exists=True, dir_okay=False), default=None, help="CSV or list of video ids.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="Output .jsonl.")
def predict_cmd(head, cache, questions, videos, out) -> None:
    """Predict answers (--questions) or labels (--videos) with HEAD, one JSON line each."""
    from heads.api import predict
    from heads.data import HeadError

    if (questions is None) == (videos is None):
        _fail("give exactly one of --questions or --videos")
    try:
        n = predict(head, cache, questions or videos, out, kind="questions" if questions else "videos")
    except HeadError as exc:
        _fail(str(exc))
    click.echo(f"wrote {n} predictions to {out}")


@main.command("encode-text")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--questions", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="MUSIC-AVQA question JSON; each question's filled-in text, keyed by question id.")
@click.option("--strings", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Text file, one string per line (e.g. answers or prompts), stored without ids.")
@click.option("--text-encoder", "encoders", multiple=True, metavar="SPEC",
              help="clip:<model>/<pretrained> or clap:<repo or folder>; default: the cache's CLIP/CLAP features.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", default=256, show_default=True, help="Texts per model call.")
def encode_text_cmd(cache, questions, strings, encoders, device, batch_size) -> None:
    """Store text embeddings of questions/strings in CACHE (do not run while extracting into it)."""
    from featpipe.avqa import AvqaFormatError
    from featpipe.cache import CacheError
    from featpipe.extractors import ExtractorError
    from featpipe.text import TextError, encode_texts_into_cache, format_summaries

    try:
        summaries = encode_texts_into_cache(cache, encoders, questions, strings, device=device, batch_size=batch_size)
    except (TextError, CacheError, ExtractorError, AvqaFormatError) as exc:
        _fail(str(exc))
    click.echo(format_summaries(summaries))


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("featpipe-demo"), show_default=True)
@click.option("--videos", default=DEMO_VIDEOS, show_default=True, help="Synthetic videos to make.")
@click.option("--seconds", default=DEMO_SECONDS, show_default=True, help="Length of each video.")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Dask workers (and synth processes).")
@click.option("--no-pretrained", is_flag=True, help="Use only the weight-free extractors even if weights are present.")
def demo(out: Path, videos: int, seconds: float, seed: int, workers: int, no_pretrained: bool) -> None:
    """Synthesise music videos, extract features, train and evaluate the AVQA head: all offline."""
    from heads.demo import DemoConfig, run_demo

    try:
        run_demo(DemoConfig(out=out, videos=videos, seconds=seconds, seed=seed, workers=workers,
                            pretrained=not no_pretrained), echo=click.echo)
    except RuntimeError as exc:
        _fail(str(exc), code=1)
