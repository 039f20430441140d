"""How a study's arrays reach the workers (heads/share.py): arms share the features the client
loaded once (views, not copies, where the head takes one array), float16 stays float16, and the
two ways to the workers (memory-mapped files on the default LocalCluster, scattered arrays on
``--scheduler``) give the same predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from study_data import LAYERS, synth_study_set

from featpipe import open_cache
from featpipe.heads import share
from featpipe.heads.arms import arm_spec, assemble, load_inputs, parse_arm, question_arrays, resolve
from featpipe.heads.study import run_study

ARMS = ["both=noise,truth", "d6=deep@6", "deep=deep"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synth_study_set(tmp_path_factory.mktemp("share") / "set", videos=40, seed=11)


def test_arms_are_views_of_the_features_loaded_once(small, tmp_path):
    arms = [parse_arm(a) for a in ["noise=noise", *ARMS]]
    with open_cache(small["cache"]) as cache:
        metas = resolve(cache, arms)
        inp = load_inputs(cache, metas, small["train"], small["val"], {"test": small["test"]})
    (noise, _), (deep, _) = inp.segs["noise"], inp.segs["deep"]
    assert deep.dtype == np.float16 and deep.shape[2:] == (len(LAYERS), 48)  # as the cache stores it
    qa = question_arrays(inp)
    got = {a.name: assemble(arm_spec(a, metas), inp.segs, qa)["train"] for a in arms}
    assert got["noise"].a is noise  # one feature: the loaded array itself
    assert np.shares_memory(got["d6"].a, deep) and np.array_equal(got["d6"].a, deep[:, :, LAYERS.index(6)])
    assert np.shares_memory(got["deep"].a, deep) and got["deep"].a.shape[-1] == len(LAYERS) * 48
    both = got["both"]  # two streams of one feature each: views too
    assert both.a is noise and np.shares_memory(both.v, inp.segs["truth"][0])
    assert got["deep"].q is got["noise"].q  # the questions are shared by every arm

    folder = tmp_path / "arrays"
    folder.mkdir()

    class Local:  # share() scatters only the questions to a client; the features go to files
        def scatter(self, items, hash=False):
            return items

    feats, questions = share.share(Local(), inp, folder)
    assert inp.segs == {} and sorted(p.name for p in folder.iterdir())[0].endswith(".npy")
    spec = arm_spec(arms[2], metas)
    mapped = share.arm_arrays("t", "d6", spec, feats, questions)["train"]
    assert isinstance(mapped.a.base, np.memmap) or isinstance(mapped.a, np.memmap)
    assert np.array_equal(mapped.a, got["d6"].a)
    assert share.arm_arrays("t", "d6", spec, feats, questions)["train"] is mapped  # the next seed builds nothing
    share.forget()


def _predictions(out):
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.glob("runs/*/*.jsonl"))}


def test_scheduler_and_local_cluster_give_the_same_predictions(small, tmp_path):
    from distributed import LocalCluster

    kw = dict(seeds=3, hparams={"max_epochs": 2}, progress=False, echo=None)
    args = (str(small["cache"]), str(small["train"]), str(small["val"]), [str(small["test"])], ARMS)
    local = run_study(*args, str(tmp_path / "local"), **kw)
    assert not list((tmp_path / "local").glob(".arrays-*"))  # the mapped files are removed at the end
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_study(*args, str(tmp_path / "remote"), scheduler=cluster.scheduler_address, **kw)
    assert _predictions(tmp_path / "local") == _predictions(tmp_path / "remote") != {}
    assert json.dumps(local["tests"], sort_keys=True) == json.dumps(remote["tests"], sort_keys=True)


def test_a_killed_studys_array_folder_is_cleared(tmp_path):
    dead = tmp_path / ".arrays-999999999-x"  # no such process
    dead.mkdir()
    (dead / "0-x.npy").write_bytes(b"")
    with share.array_folder(tmp_path) as live:
        assert not dead.exists() and str(live).startswith(str(tmp_path / ".arrays-"))
