"""featpipe command line: a thin click layer over featpipe/ and heads/ (and demo.py beside it).

Each command parses its options and calls one library function; exit codes: 0 success,
1 some items failed (the rest were committed), 2 usage or setup errors (bad spec, missing
weights, unusable cache).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from featpipe.run.config import ExtractConfig
from featpipe.demo import DemoConfig


class Failure(click.ClickException):
    """A setup problem (bad spec, missing weights, unusable cache), or with ``code=1`` a run that
    could not finish: one line on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:
        click.echo(f"featpipe: error: {self.format_message()}", err=True)


@click.group()
@click.version_option(package_name="featpipe")
def main() -> None:
    """featpipe: aligned audio-visual embedding caches for music videos, and heads that train on them."""


class Pair(click.ParamType):
    """``KEY=VALUE`` parsed into ``(key, value)``, the one parser of the command line's pairs.

    ``optional_key``: ``[KEY=]VALUE``, a value alone gives ``("", value)``. ``last``: split at the last
    ``=`` (the value cannot hold one, the key may). ``value_required``: an empty value is refused.
    """

    def __init__(self, metavar: str = "KEY=VALUE", optional_key: bool = False, last: bool = False,
                 value_required: bool = False) -> None:
        self.name, self.optional_key, self.last, self.value_required = metavar, optional_key, last, value_required

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).rpartition("=") if self.last else str(value).partition("=")
        if not sep and self.optional_key:
            return "", str(value).strip()
        if not sep or not key.strip() or (self.value_required and not val.strip()):
            self.fail(f"{value!r} is not {self.name}", param, ctx)
        return key.strip(), val.strip()


class Finite(click.FloatRange):
    """A float in a range that is also finite: ``nan`` passes every comparison and ``inf`` means no
    number, so both are usage errors rather than a run that divides by them."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class TimelineType(click.ParamType):
    name = "seconds|beats[:N]"

    def convert(self, value, param, ctx):
        from featpipe.run.beat_timeline import Timeline, TimelineError, parse_timeline

        if isinstance(value, Timeline):
            return value
        try:
            return parse_timeline(value)
        except TimelineError as exc:
            self.fail(str(exc), param, ctx)


_POSITIVE = Finite(min=0, min_open=True)
_NOT_NEGATIVE = Finite(min=0)
_SHARE = Finite(0, 1)
_AT_LEAST_1 = click.IntRange(min=1)


def _weights(pairs: tuple[tuple[str, str], ...]) -> dict:
    """``--weights PATH`` (for every extractor that takes one) and ``--weights NAME=PATH`` (for one)."""
    plain, by = [], []
    for name, path in pairs:
        # NAME=PATH when the part before "=" is an extractor name or a spec, not a path of its own
        if name and (":" in name or "/" not in name):
            by.append((name, path))
        else:
            plain.append(f"{name}={path}" if name else path)
    if len(plain) > 1:
        raise click.BadParameter(f"{len(plain)} plain paths; give one, or NAME=PATH for each extractor",
                                 param_hint="--weights")
    return {"weights": plain[0] if plain else None, "weights_by": tuple(by)}


# -- featpipe extract: every option once, with where its value goes in ExtractConfig ------------------
_X = ExtractConfig(inputs=[], cache=Path("cache.h5"))  # featpipe.run.config is the one home of extract's defaults
_INTO: dict[str, tuple[str, object]] = {}  # click parameter name -> (ExtractConfig path, conversion or None)


def _into(path: str, *decls: str, convert=None, **attrs):
    """``click.option`` for ``featpipe extract`` whose value goes to ``path`` of the config
    (``"params.fps"``: ``ExtractConfig.params.fps``; ``"options.*"``: a dict of several fields)."""
    def decorate(f):
        f = (click.argument if attrs.pop("argument", False) else click.option)(*decls, **attrs)(f)
        _INTO[f.__click_params__[-1].name] = (path, convert)
        return f
    return decorate


def extract_config(values: dict) -> ExtractConfig:
    """The run's configuration from ``featpipe extract``'s parsed options (built here, once)."""
    from featpipe.contracts import ExtractOptions
    from featpipe.decode import DecodeParams
    from featpipe.run.retry import TryPolicy

    parts: dict[str, dict] = {"": {}, "params": {}, "options": {}, "try_policy": {}}
    for name, value in values.items():
        path, convert = _INTO[name]
        value = convert(value) if convert else value
        part, _, field = path.rpartition(".")
        parts[part].update(value if field == "*" else {field: value})
    return ExtractConfig(**parts[""], params=DecodeParams(**parts["params"]),
                         options=ExtractOptions(**parts["options"]), try_policy=TryPolicy(**parts["try_policy"]))


def _extract_options(f):
    options = [
        _into("inputs", "inputs", nargs=-1, required=True, argument=True, convert=list),
        _into("cache", "-o", "--output", "cache", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Cache file (.h5) to create or extend."),
        _into("visual", "--visual", multiple=True, metavar="SPEC", convert=tuple,
              help="Visual extractor spec, e.g. clip:ViT-B-32/openai or motion."),
        _into("audio", "--audio", multiple=True, metavar="SPEC", convert=tuple,
              help="Audio extractor spec, e.g. priors or openl3:mel256/music/512."),
        _into("params.fps", "--fps", type=_POSITIVE, default=_X.params.fps, show_default=True,
              help="Segments per second (MUSIC-AVQA uses 1)."),
        _into("params.max_seconds", "--max-seconds", type=_POSITIVE, default=_X.params.max_seconds,
              help="Fix every video to this many seconds: longer ones are cut, shorter ones padded (see --pad)."),
        _into("params.pad", "--pad", type=click.Choice(["repeat", "zero"]), default=_X.params.pad, show_default=True,
              help="How --max-seconds pads short videos: repeat the last segment (as MUSIC-AVQA) or zeros; "
                   "also what rows a stream missed inside (a late start, a hole) hold."),
        _into("workers", "--workers", type=_AT_LEAST_1, default=_X.workers, show_default=True,
              help="Local Dask worker processes (ignored with --scheduler; with --device cuda: one per GPU)."),
        _into("scheduler", "--scheduler", default=None, metavar="ADDRESS",
              help="Use a running Dask scheduler: tcp://host:8786 (trusted networks only: whoever can join it "
                   "runs code in this process) or tls://host:8786 with --tls-* (docs/distributed.md)."),
        _into("tls_ca_file", "--tls-ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="tls:// scheduler: the CA certificate that signed the scheduler's and workers' certificates."),
        _into("tls_cert", "--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="tls:// scheduler: this client's certificate (PEM; may hold the key too)."),
        _into("tls_key", "--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="tls:// scheduler: this client's private key (PEM), when not in --tls-cert."),
        # "auto" is the command line's own choice: library callers get ExtractOptions' "cpu", reproducible anywhere
        _into("options.device", "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True),
        _into("options.batch_size", "--batch-size", type=_AT_LEAST_1, default=_X.options.batch_size,
              show_default=True, help="Frames or windows per model call."),
        _into("options.tokens", "--tokens", is_flag=True, help="Also store patch tokens of visual models that have them."),
        _into("options.*", "--weights", "weights", multiple=True, metavar="[NAME=]PATH", convert=_weights,
              type=Pair("[NAME=]PATH", optional_key=True),
              help="Weight file for extractors that take one (e.g. OpenL3); NAME=PATH (an extractor name or spec) "
                   "gives one extractor its own file."),
        _into("dtype", "--dtype", type=click.Choice(["float16", "float32"]), default=None,
              help="Storage type (default float16)."),
        _into("options.extra", "--set", "extra", type=Pair(), multiple=True, convert=lambda v: tuple(sorted(v)),
              help="Extractor option, e.g. --set native=1."),
        _into("names", "--name", "names", multiple=True, type=Pair("[SPEC=]NAME", optional_key=True, last=True),
              convert=tuple, help="Store an extractor's features under another name: a variant (e.g. another --set) "
                                  "beside the original in one cache. SPEC (or the extractor's name) says which, when "
                                  "the run has several."),
        _into("try_policy.video_timeout", "--video-timeout", type=_NOT_NEGATIVE, default=_X.try_policy.video_timeout,
              show_default=True, metavar="SECONDS", convert=lambda v: v or None,
              help="Per-video time limit: SECONDS + --video-timeout-scale x the duration; a video past it is "
                   "failed and its worker restarted. 0: no limit."),
        _into("try_policy.timeout_per_second", "--video-timeout-scale", "video_timeout_scale", type=_NOT_NEGATIVE,
              default=_X.try_policy.timeout_per_second, show_default=True, metavar="FACTOR",
              help="Seconds added to the time limit per second of video."),
        _into("max_in_flight", "--max-in-flight", type=_AT_LEAST_1, default=_X.max_in_flight, metavar="N",
              help="Videos submitted and not yet committed at once (default: two per worker thread)."),
        _into("params.min_decoded", "--min-decoded", type=_SHARE, default=_X.params.min_decoded, show_default=True,
              metavar="SHARE", help="Fail a video when a stream decodes less than this share of the duration its "
                                    "file states."),
        _into("params.max_bad_packets", "--max-bad-packets", type=_SHARE, default=_X.params.max_bad_packets,
              show_default=True, metavar="SHARE",
              help="Fail a video when more than this share of a stream's packets cannot be decoded."),
        _into("params.video_stream", "--video-stream", type=click.IntRange(min=0), default=None, metavar="INDEX",
              help="Stream index to decode (default: the best video stream that is not a cover picture)."),
        _into("params.audio_stream", "--audio-stream", type=click.IntRange(min=0), default=None, metavar="INDEX",
              help="Stream index to decode (default: the default audio stream, else the best)."),
        _into("timeline", "--timeline", type=TimelineType(), default=str(_X.timeline), show_default=True,
              metavar="seconds|beats[:N]",
              help="Rows per fixed segment (seconds, the field's layouts) or per N beats (beats, beats:4): the video "
                   "is extracted once on the --fps grid and every feature pooled into the beat segments found by "
                   "--audio rhythm; the cache stores each video's segment bounds."),
        _into("stream", "--no-stream", "stream", flag_value=False, default=_X.stream,
              help="Send each video's rows to the client in memory instead of streaming them through <cache>.spool/."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command()
@_extract_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract(quiet: bool, **options) -> None:
    """Extract features of INPUTS (files, folders, or .txt lists of paths) into one cache."""
    from featpipe.cache import CacheError
    from featpipe.extractors import ExtractorError
    from featpipe.run import PipelineError, run_extract
    from featpipe.run.inputs import InputError

    from featpipe.run.cluster import ClusterError, security

    cfg = extract_config(options)
    try:  # a bad address, or a tls:// scheduler without certificates: one line, before any work
        security(cfg.scheduler, (cfg.tls_ca_file, cfg.tls_cert, cfg.tls_key))
    except ClusterError as exc:
        raise Failure(str(exc)) from None
    progress = _ExtractProgress(quiet)
    try:
        summary = run_extract(cfg, on_progress=progress.step, on_start=progress.start)
    except (ExtractorError, CacheError, InputError, PipelineError) as exc:
        raise Failure(str(exc)) from None  # a lost scheduler too: what was committed stays, and a rerun resumes
    finally:
        progress.close()
    _print_summary(summary)
    sys.exit(0 if summary.ok else 1)


class _ExtractProgress:
    """The progress bar of ``featpipe extract``: videos, with segments and failures so far."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.segments, self.failed = quiet, None, 0, 0

    def start(self, total: int, todo: int, dashboard: str | None) -> None:
        from tqdm import tqdm

        if dashboard:
            click.echo(f"dask dashboard: {dashboard}", err=True)
        self.bar = tqdm(total=total, initial=total - todo, unit="video", disable=self.quiet, dynamic_ncols=True,
                        desc="extract")

    def step(self, kind: str, result) -> None:
        if self.bar is None or kind == "skipped":
            return
        self.segments += result.segments if result is not None else 0
        self.failed += kind == "failed"
        self.bar.update(1)
        self.bar.set_postfix(segments=self.segments, failed=self.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(summary) -> None:
    rate = len(summary.done) / summary.seconds if summary.seconds else 0.0
    click.echo(f"done {len(summary.done)}, skipped {len(summary.skipped)}, failed {len(summary.failed)} "
               f"in {summary.seconds:.1f} s ({rate:.2f} videos/s, {summary.segments} segments)", err=True)
    for vid, path, reason in summary.failed:
        click.echo(f"  failed {vid} ({path}): {reason}", err=True)
    click.echo(f"report: {summary.report}", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="New cache to write (must not exist).")
def merge(inputs, output) -> None:
    """Merge caches with the same timeline into a new one (shards of one extraction; later records win)."""
    from featpipe.cache import CacheError
    from featpipe.cache.merge import merge_caches

    try:
        s = merge_caches(list(inputs), output)
    except CacheError as exc:
        raise Failure(str(exc)) from None
    click.echo(f"{s.output}: {s.videos} videos from {s.records} records, features {', '.join(s.features) or 'none'}"
               f", {s.texts} text embeddings")


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(cache: str, as_json: bool) -> None:
    """Show a cache's features, dimensions, counts, timelines and provenance."""
    from featpipe.cache import CacheError
    from featpipe.cache.describe import describe, format_description

    try:
        desc = describe(cache)
    except CacheError as exc:
        raise Failure(str(exc)) from None
    click.echo(json.dumps(desc, indent=2) if as_json else format_description(desc))


@main.command()
def models() -> None:
    """List the extractor specs featpipe knows."""
    from featpipe.extractors import available

    for name, cls in available().items():
        click.echo(f"{cls.spec_help or name:45s} {cls.summary}")
        for ex in cls.examples:
            click.echo(f"    e.g. {ex}")
        for key, opt in sorted(cls.option_specs.items()):
            kind = "|".join(map(str, opt.choices)) or opt.type.__name__
            click.echo(f"    --set {key}=<{kind}> (default {opt.default}){': ' + opt.help if opt.help else ''}")


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
        raise Failure(str(exc)) from None
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
@click.option("--rhythm/--no-rhythm", default=None,
              help="Add the cache's rhythm features to the audio stream, or leave them out (default: as --features).")
@click.option("--threads", type=_AT_LEAST_1, default=1, show_default=True,
              help="Torch CPU threads; give it the cores when nothing else runs (docs/heads.md).")
def train_head_cmd(cache, task, train_file, val_file, features, model, fusion, question, no_baseline, seed, epochs,
                   patience, lr, batch_size, hidden, out, quiet, rhythm, threads) -> None:
    """Train a head on CACHE and save it to a directory."""
    from featpipe.heads.api import train_head
    from featpipe.heads.data import HeadError

    hp = {k: v for k, v in {"max_epochs": epochs, "patience": patience, "lr": lr, "batch_size": batch_size,
                            "hidden": hidden, "fusion": fusion}.items() if v is not None}
    try:
        hists = train_head(cache, task, train_file, val_file, _features(features), out, seed=seed, model=model,
                           question=question, hparams=hp, baseline=not no_baseline, progress=not quiet,
                           rhythm=rhythm, threads=threads)
    except HeadError as exc:
        raise Failure(str(exc)) from None
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
    from featpipe.heads.api import evaluate
    from featpipe.heads.data import HeadError

    try:
        result = evaluate(head, cache, test_file, report=report, plot=plot)
    except HeadError as exc:
        raise Failure(str(exc)) from None
    if result["task"] == "avqa":
        ds = result["dataset"]
        click.echo(f"{ds['dataset']}, {ds['split']} ({test_file})" if ds["dataset"] != "unknown" else f"test file {test_file}")
        click.echo(result["table_text"])
        click.echo(f"({result['average_definition']})")
    else:
        m = result["metrics"]
        click.echo(f"accuracy {100 * m['accuracy']:.2f}%  macro-F1 {100 * m['macro_f1']:.2f}%  ({m['n']} videos)")


@main.command("study")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--train", "train_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--val", "val_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Validation questions: the early-stopping rule every arm shares.")
@click.option("--test", "test_files", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Test questions; repeat for several (MUSIC-AVQA-R: head, tail and headtail files).")
@click.option("--arm", "arms", multiple=True, required=True, metavar="NAME=FEAT[@K][,FEAT[@K]]",
              help="An arm: a named feature set (FEAT@K: layer K of a layer-wise feature). Repeat.")
@click.option("--baseline", default=None, metavar="NAME", help="The arm the others are compared with (default: the first).")
@click.option("--seeds", default=3, show_default=True, type=int, help="Training seeds per arm (0..N-1); 5+ recommended.")
@click.option("--head", type=click.Choice(["temporal", "spatial"]), default="temporal", show_default=True,
              help="The one AVQA head every arm trains.")
@click.option("--set", "hparams", type=Pair(), multiple=True, metavar="KEY=VALUE",
              help="A head hyperparameter, fixed across arms (hidden, dropout, lr, weight_decay, batch_size, "
                   "max_epochs, patience, schedule, pointers).")
@click.option("--question", default="auto", show_default=True, help="Question embedding: auto, bow or a cached encoder.")
@click.option("--workers", type=_AT_LEAST_1, default=None, help="Local Dask worker processes (default 2).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Use a running Dask scheduler, e.g. tcp://host:8786.")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Study folder; the same command again resumes it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def study_cmd(cache, train_file, val_file, test_files, arms, baseline, seeds, head, hparams, question, workers,
              scheduler, out, quiet) -> None:
    """Compare feature sets (arms) on CACHE: one head, the same seeds and splits, intervals and paired tests."""
    from featpipe.heads.data import HeadError
    from featpipe.heads.study import RunsFailed, parse_hparams, run_study

    try:
        run_study(cache, train_file, val_file, test_files, arms, out, baseline=baseline, seeds=seeds, head=head,
                  hparams=parse_hparams(dict(hparams)), question=question, scheduler=scheduler, workers=workers,
                  progress=not quiet, echo=click.echo)
    except RunsFailed as exc:  # the finished runs are kept: exit 1, as extract does for failed videos
        raise Failure(str(exc), code=1) from None
    except HeadError as exc:
        raise Failure(str(exc)) from None


@main.command("predict")
@click.argument("head", type=click.Path(exists=True, file_okay=False))
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--questions", type=click.Path(exists=True, dir_okay=False), default=None, help="MUSIC-AVQA JSON.")
@click.option("--videos", type=click.Path(exists=True, dir_okay=False), default=None, help="CSV or list of video ids.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="Output .jsonl.")
def predict_cmd(head, cache, questions, videos, out) -> None:
    """Predict answers (--questions) or labels (--videos) with HEAD, one JSON line each."""
    from featpipe.heads.api import predict
    from featpipe.heads.data import HeadError

    if (questions is None) == (videos is None):
        raise click.UsageError("give exactly one of --questions or --videos")
    try:
        n = predict(head, cache, questions or videos, out, kind="questions" if questions else "videos")
    except HeadError as exc:
        raise Failure(str(exc)) from None
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
@click.option("--field-tables", is_flag=True,
              help="Also store, per question id, what PSTP-Net/TSPM read (CLIP encoders): <enc>-qst, "
                   "<enc>-words (77 per-token outputs), <enc>-qaprompt (TSPM's prompt).")
def encode_text_cmd(cache, questions, strings, encoders, device, batch_size, field_tables) -> None:
    """Store text embeddings of questions/strings in CACHE (do not run while extracting into it)."""
    from featpipe.avqa import AvqaFormatError
    from featpipe.cache import CacheError
    from featpipe.extractors import ExtractorError
    from featpipe.text import TextError, encode_texts_into_cache, format_summaries

    try:
        summaries = encode_texts_into_cache(cache, encoders, questions, strings, device=device, batch_size=batch_size,
                                            with_field_tables=field_tables)
    except (TextError, CacheError, ExtractorError, AvqaFormatError) as exc:
        raise Failure(str(exc)) from None
    click.echo(format_summaries(summaries))


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DemoConfig.out, show_default=True)
@click.option("--videos", default=DemoConfig.videos, show_default=True, help="Synthetic videos to make.")
@click.option("--seconds", default=DemoConfig.seconds, show_default=True, help="Length of each video.")
@click.option("--seed", default=DemoConfig.seed, show_default=True)
@click.option("--workers", default=DemoConfig.workers, show_default=True, help="Dask workers (and synth processes).")
@click.option("--no-pretrained", is_flag=True, help="Use only the weight-free extractors even if weights are present.")
def demo(out: Path, videos: int, seconds: float, seed: int, workers: int, no_pretrained: bool) -> None:
    """Synthesise music videos, extract features, train and evaluate the AVQA head: all offline."""
    from featpipe.demo import run_demo

    try:
        run_demo(DemoConfig(out=out, videos=videos, seconds=seconds, seed=seed, workers=workers,
                            pretrained=not no_pretrained), echo=click.echo)
    except RuntimeError as exc:
        raise Failure(str(exc), code=1) from None


class _FileBar:
    """A tqdm bar over files for export/import: ``start(total)``, ``step()``; closes on exit."""

    def __init__(self, quiet: bool, desc: str) -> None:
        self.quiet, self.desc, self.bar = quiet, desc, None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="file", disable=self.quiet, dynamic_ncols=True, desc=self.desc)

    def step(self) -> None:
        self.bar.update()

    def __enter__(self) -> "_FileBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _finish(problems: list[str], kind: str, line: str) -> None:
    for p in problems:
        click.echo(f"{kind}: {p}", err=True)
    click.echo(line)
    sys.exit(1 if problems else 0)


@main.command("export")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--layout", required=True, type=click.Choice(["avst", "pstp-net", "tspm", "qa-tiger", "generic"]),
              help="Whose dataloader reads the result (docs/interop.md); generic: --feature/--text as given.")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the layout's folders into.")
@click.option("--questions", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="MUSIC-AVQA JSON: export these question ids (and, without --videos, their videos).")
@click.option("--videos", "videos_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Text file of video ids, one per line (or CSV, first column); default: all.")
@click.option("--use", multiple=True, type=Pair("FOLDER=FEATURE[,FEATURE]", value_required=True),
              help="Fill a layout folder from this cache feature (CLS,TOKENS for a 50-token folder).")
@click.option("--feature", multiple=True, type=Pair("FEATURE=FOLDER", value_required=True), help="generic: write FOLDER/<video_id>.npy.")
@click.option("--text", multiple=True, type=Pair("TABLE=FOLDER", value_required=True), help="generic: write FOLDER/<question_id>.npy.")
@click.option("--length", type=int, default=None, help="generic: rows per file (cut, or repeat the last).")
@click.option("--force", is_flag=True, help="Rewrite files that already hold the same arrays.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_cmd(cache, layout, out, questions, videos_file, use, feature, text, length, force, quiet) -> None:
    """Write CACHE's features as the .npy folders a project's unmodified dataloader reads."""
    from featpipe.avqa import AvqaFormatError
    from featpipe.cache import CacheError
    from featpipe.interop import ExportError, export, generic_layout, read_id_list

    if layout == "generic":
        if not feature and not text:
            raise click.UsageError("--layout generic needs --feature FEATURE=FOLDER or --text TABLE=FOLDER")
        lay = generic_layout(dict(feature), dict(text), length)
    elif feature or text or length is not None:
        raise click.UsageError("--feature, --text and --length go with --layout generic")
    else:
        lay = layout
    uses = {k: [n.strip() for n in v.split(",") if n.strip()] for k, v in dict(use).items()}
    with _FileBar(quiet, "export") as bar:
        try:
            s = export(cache, lay, out, questions=questions, use=uses, force=force, on_start=bar.start,
                       videos=read_id_list(videos_file) if videos_file else None, on_file=bar.step)
        except (ExportError, CacheError, AvqaFormatError, OSError) as exc:
            raise Failure(str(exc)) from None
    _finish(s.missing, "missing", s.line())


@main.command("import")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(["avst", "pstp-net", "tspm", "qa-tiger"]), default=None,
              help="FOLDER holds this project's feature folders.")
@click.option("--feature", multiple=True, type=Pair("NAME=FOLDER", value_required=True), help="Import FOLDER/<video_id>.npy as feature NAME.")
@click.option("--modality", multiple=True, type=Pair("NAME=audio|visual", value_required=True),
              help="Modality of a --feature (default: guessed from its name).")
@click.option("-o", "--output", "cache", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Cache to create or extend.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_cmd(folder, layout, feature, modality, cache, dtype, quiet) -> None:
    """Bring existing per-video .npy features (a project's folders, or any) into a cache."""
    from featpipe.cache import CacheError
    from featpipe.interop import ImportSetupError, ImportSource, import_features, layout_sources
    from featpipe.interop.importer import guess_modality

    if (layout is None) == (not feature):
        raise click.UsageError("give FOLDER --layout NAME, or --feature NAME=FOLDER (not both)")
    if layout and folder is None:
        raise click.UsageError("--layout needs the FOLDER that holds the layout's folders")
    mods = dict(modality)
    bad = {v for v in mods.values() if v not in ("audio", "visual")}
    if bad:
        raise click.BadParameter(f"takes audio or visual, not {', '.join(sorted(bad))}", param_hint="--modality")
    with _FileBar(quiet, "import") as bar:
        try:
            if layout:
                sources = layout_sources(folder, layout)
            else:
                sources = [ImportSource(n, Path(p), mods.get(n, guess_modality(n)))
                           for n, p in dict(feature).items()]
            s = import_features(cache, sources, dtype=dtype, on_start=bar.start, on_file=bar.step)
        except (ImportSetupError, CacheError, OSError) as exc:
            raise Failure(str(exc)) from None
    _finish(s.refused, "refused", s.line())


if __name__ == "__main__":  # python -m featpipe.cli
    main()
