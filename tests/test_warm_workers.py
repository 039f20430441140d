"""Local workers forked from a warm fork server: imports done once, the run's environment, the thread budget."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from featpipe.run import cluster
from featpipe.run.cluster import connect, preload_modules, thread_budget, warm_workers
from featpipe.extractors.priors import Priors
from featpipe.run.worker import use_thread_budget

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="no fork server on Windows")


def _seen():
    return "colorsys" in sys.modules, os.environ.get("FEATPIPE_WARM_PROBE"), os.environ.get("OMP_NUM_THREADS")


def test_preload_modules_follow_the_run():
    assert preload_modules(("clip:ViT-B-32/random", "priors")) == [
        "distributed", "featpipe.run.worker", "featpipe.extractors.clip", "torch", "open_clip",
        "featpipe.extractors.priors"]
    assert preload_modules(("motion",)) == ["distributed", "featpipe.run.worker", "featpipe.extractors.motion"]


def test_thread_budget_shares_the_cores(monkeypatch):
    monkeypatch.setattr(cluster, "cores", lambda: 16)
    assert thread_budget(2) == 8
    assert thread_budget(1) == 16  # one worker gets every core (Dask alone would give it one thread)
    assert thread_budget(32) == 1


def test_workers_fork_from_a_server_with_the_run_modules_and_environment(monkeypatch):
    # a module no worker imports by itself stands in for torch/open_clip
    monkeypatch.setattr(Priors, "preload", ("colorsys",))
    monkeypatch.setenv("FEATPIPE_WARM_PROBE", "first")
    budget = str(thread_budget(1))
    with warm_workers(("priors",), 1) as warm:
        assert warm
        with connect(workers=1) as client:
            assert list(client.run(_seen).values()) == [(True, "first", budget)]
    # the server was stopped: the next run's workers see the next run's environment
    monkeypatch.setenv("FEATPIPE_WARM_PROBE", "second")
    with warm_workers(("motion",), 1):
        with connect(workers=1) as client:
            assert list(client.run(_seen).values()) == [(False, "second", budget)]


def _loaded():
    from featpipe.run import loaded_extractors as loaded

    return sorted(spec for spec, _ in loaded._EXTRACTORS), "FEATPIPE_WARM_EXTRACTORS" in os.environ


def test_workers_start_with_the_run_extractors_loaded():
    from featpipe.contracts import ExtractOptions

    # "motion:zzz" fails to build in the server: the server goes on, the worker meets it on its first video
    with warm_workers(("motion:zzz", "priors"), 1, options=ExtractOptions(batch_size=7)) as warm:
        assert warm
        with connect(workers=1) as client:
            assert list(client.run(_loaded).values()) == [(["priors"], False)]
    with warm_workers(("priors",), 1):  # no options: imports only, as before
        with connect(workers=1) as client:
            assert list(client.run(_loaded).values()) == [([], False)]


def test_not_enabled_spawns_as_before(monkeypatch):
    monkeypatch.setattr(Priors, "preload", ("colorsys",))
    with warm_workers(("priors",), 1, enabled=False) as warm:
        assert not warm
        with connect(workers=1) as client:  # spawned, still with the thread budget
            seen = list(client.run(_seen).values())[0]
            assert seen[0] is False and seen[2] == str(thread_budget(1))


def test_use_thread_budget_sets_torch_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        use_thread_budget()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_preload_modules_know_every_builtin_spec_name_and_import_only_the_run():
    # spec names whose module is named otherwise (resnet18-14x14, r2plus1d-18) or shared (tome14 in tome.py)
    # were once checked against module names: never preloaded, and the client imported every extractor
    code = ("import sys; from featpipe.run.cluster import preload_modules; "
            "print(preload_modules(('resnet18-14x14', 'r2plus1d-18', 'tome14'))); "
            "print(sorted(m for m in sys.modules if m.startswith('featpipe.extractors.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(["distributed", "featpipe.run.worker", "featpipe.extractors.resnet18_14x14", "torch",
                          "torchvision", "featpipe.extractors.r2plus1d_18", "featpipe.extractors.tome", "timm"])
    assert out[1] == str(["featpipe.extractors.base", "featpipe.extractors.checkpoint",
                          "featpipe.extractors.r2plus1d_18", "featpipe.extractors.resnet18_14x14",
                          "featpipe.extractors.tome"])


def test_builtin_table_names_every_registered_extractor():
    from featpipe import extractors

    assert set(extractors.available()) >= set(extractors.BUILTIN)
    for name, module in extractors.BUILTIN.items():
        assert extractors.extractor_class(name).__module__ == f"featpipe.extractors.{module}"


def test_the_budget_beats_what_an_earlier_cluster_left_in_the_environment_and_nothing_stays(monkeypatch):
    # Dask's nanny lets os.environ beat pre-spawn-environ and writes it into the client for good: a run
    # with --workers 2 left OMP_NUM_THREADS=1 behind, and the next run's single worker got 1 thread
    budget = str(thread_budget(1))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with connect(workers=1) as client:
        assert list(client.run(_seen).values())[0][2] == budget
    assert os.environ["OMP_NUM_THREADS"] == "7"
    monkeypatch.delenv("OMP_NUM_THREADS")
    with connect(workers=1) as client:
        assert list(client.run(_seen).values())[0][2] == budget
    assert "OMP_NUM_THREADS" not in os.environ
