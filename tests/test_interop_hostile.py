"""Hostile folders for ``featpipe import`` and ``export`` (issue #22): names that are paths, values past
float16, odd files that must not set the row shape, symlinks out of the folder, 0-d and .npz files named
.npy, a planted export index. All fixtures are written here."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featpipe.cache import CacheWriter, open_cache
from featpipe.cli import main
from featpipe.extractors.base import OutputSpec

FIELD = {"fps": 1.0, "seg_len": 1.0, "max_seconds": 60.0, "pad": "repeat"}


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output, r.output
    return r


def rows(value: float = 1.0, n: int = 60, dim: int = 3, dtype=np.float32) -> np.ndarray:
    return np.full((n, dim), value, dtype)


def folder_of(path, **arrays):
    path.mkdir(parents=True, exist_ok=True)
    for vid, arr in arrays.items():
        np.save(path / f"{vid}.npy", arr)
    return path


def base_cache(path):
    with CacheWriter(path, FIELD) as w:
        w.ensure_feature(OutputSpec("feat", (3,), "audio"), {"spec": "feat", "weights": "none"})
        w.start()
        w.commit({"video_id": "v0", "source": {"size": 1, "mtime": 0}}, {"feat": rows()})
    return path


@pytest.mark.parametrize("name", ["a/b", "../x", "/abs", ".", "..", "x/../../y", ""])
def test_import_names_that_are_paths_are_refused_and_leave_nothing(tmp_path, name):
    cache = base_cache(tmp_path / "c.h5")
    src = folder_of(tmp_path / "npy", v0=rows())
    r = run("import", "--feature", f"{name}=" + str(src) if name else "=" + str(src), "-o", cache, "--quiet")
    assert r.exit_code == 2 and len([x for x in r.output.splitlines() if "rror:" in x]) == 1, r.output
    with h5py.File(cache, "r") as f:
        assert list(f["features"]) == ["feat"]
    with open_cache(cache) as c:  # still readable, unchanged
        assert c.features == ["feat"] and c.videos == ["v0"]


def test_import_refuses_values_past_float16_instead_of_storing_inf(tmp_path):
    src = folder_of(tmp_path / "npy", v0=rows(2.0), v1=rows(1e5), v2=rows(-7e4))
    cache = tmp_path / "c.h5"
    r = run("import", "--feature", f"imp={src}", "-o", cache, "--quiet")
    assert r.exit_code == 1
    refused = [line for line in r.output.splitlines() if line.startswith("refused:")]
    assert len(refused) == 2 and all("past float16's range" in line and "--dtype float32" in line for line in refused)
    with open_cache(cache) as c:
        assert c.videos == ["v0"] and np.isfinite(c.load("imp")[0]).all()
    r = run("import", "--feature", f"wide={src}", "-o", tmp_path / "c32.h5", "--dtype", "float32", "--quiet")
    assert r.exit_code == 0, r.output
    with open_cache(tmp_path / "c32.h5") as c:
        assert c.videos == ["v0", "v1", "v2"] and c.load("wide", ["v1"])[0].max() == 1e5


def test_row_shape_is_not_taken_from_a_refused_file(tmp_path):
    src = folder_of(
        tmp_path / "npy",
        a0=np.full((60, 5), "x"),  # first by name, but not numbers
        v1=rows(),
        v2=rows(),
        v3=rows(dim=4),
    )
    (src / "a1.npy").write_bytes(
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (60, 9), }" + b" " * 49 + b"\n"
    )  # a header with no data behind it
    cache = tmp_path / "c.h5"
    r = run("import", "--feature", f"imp={src}", "-o", cache, "--quiet")
    refused = sorted(
        line.split(": ", 2)[1].rsplit("/", 1)[-1] for line in r.output.splitlines() if line.startswith("refused:")
    )
    assert refused == ["a0.npy", "a1.npy", "v3.npy"], r.output
    with open_cache(cache) as c:
        assert c.videos == ["v1", "v2"] and c.info("imp").shape == (3,)


def test_symlinks_out_of_the_import_folder_are_not_followed(tmp_path):
    outside = folder_of(tmp_path / "outside", secret=rows(5.0))
    src = folder_of(tmp_path / "npy", v0=rows(1.0))
    os.symlink(outside / "secret.npy", src / "v1.npy")
    os.symlink("v0.npy", src / "v2.npy")  # inside the folder: fine
    cache = tmp_path / "c.h5"
    r = run("import", "--feature", f"imp={src}", "-o", cache, "--quiet")
    assert r.exit_code == 1 and "v1.npy: a symbolic link out of" in r.output, r.output
    with open_cache(cache) as c:
        assert c.videos == ["v0", "v2"]


def test_zero_d_and_npz_named_npy_are_one_line_each(tmp_path):
    src = folder_of(tmp_path / "npy", v0=rows(), v1=np.float32(3.0))
    with open(src / "v2.npy", "wb") as fh:
        np.savez(fh, a=rows())
    (src / "v3.npy").write_bytes(b"")
    cache = tmp_path / "c.h5"
    r = run("import", "--feature", f"imp={src}", "-o", cache, "--quiet")
    assert r.exit_code == 1
    lines = {
        line.rsplit("/", 1)[-1].split(":")[0]: line for line in r.output.splitlines() if line.startswith("refused:")
    }
    assert set(lines) == {"v1.npy", "v2.npy", "v3.npy"}, r.output
    assert "0-d" in lines["v1.npy"] and ".npz" in lines["v2.npy"]
    with open_cache(cache) as c:
        assert c.videos == ["v0"]


# -- 14. nothing written through a symlink out of the output folders ----------------------------------
def test_export_never_writes_through_symlinks_out_of_its_folder(tmp_path):
    cache = base_cache(tmp_path / "c.h5")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    (out / "f").mkdir(parents=True)
    (out / ".featpipe-export.jsonl").symlink_to(victim)
    np.save(tmp_path / "v0.npy", rows().astype(np.float32))  # what the export would write, outside
    (out / "f" / "v0.npy").symlink_to(tmp_path / "v0.npy")
    r = run("export", cache, "--layout", "generic", "--feature", "feat=f", "-o", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "keep me\n"
    assert (
        not (out / ".featpipe-export.jsonl").is_symlink() and "f/v0.npy" in (out / ".featpipe-export.jsonl").read_text()
    )
    assert not (out / "f" / "v0.npy").is_symlink()  # replaced by the export's own file
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "g").symlink_to(outside)
    for folder in ("g", "../escape", str(tmp_path / "abs")):
        r = run("export", cache, "--layout", "generic", "--feature", f"feat={folder}", "-o", out, "--quiet")
        assert r.exit_code == 2 and "leads out of" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape").exists() and not (tmp_path / "abs").exists()


def test_spool_folder_symlink_is_replaced_not_followed(tmp_path):
    from featpipe.run.spool import SpoolFolder

    outside = tmp_path / "outside"
    outside.mkdir()
    keep = outside / "0123456789ab-1-89abcdef-0.rows"  # named like a spool file
    keep.write_bytes(b"not featpipe's")
    cache = tmp_path / "c.h5"
    os.symlink(outside, f"{cache}.spool")
    folder = SpoolFolder(cache).open()
    assert folder.path.is_dir() and not folder.path.is_symlink()
    assert keep.read_bytes() == b"not featpipe's"
    folder.close()
    assert keep.exists()


def test_weight_downloads_are_capped_and_checked(tmp_path, monkeypatch):
    import hashlib

    from featpipe.extractors.base import WeightsError
    from featpipe.models.weights import find_weights

    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("FEATPIPE_NO_DOWNLOAD", raising=False)
    src = tmp_path / "published.bin"
    src.write_bytes(os.urandom(1 << 16))
    url = src.as_uri()
    with pytest.raises(WeightsError, match="cap of 1000 bytes"):
        find_weights("w.bin", url=url, max_bytes=1000)
    monkeypatch.setenv("FEATPIPE_MAX_DOWNLOAD_MB", "0.01")
    with pytest.raises(WeightsError, match="cap"):
        find_weights("w.bin", url=url)
    monkeypatch.delenv("FEATPIPE_MAX_DOWNLOAD_MB")
    with pytest.raises(WeightsError, match="sha256 is"):
        find_weights("w.bin", url=url, sha256="0" * 64)
    assert not list((tmp_path / "weights").iterdir())  # nothing half-kept
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    path = find_weights("w.bin", url=url, sha256=good)
    assert path.read_bytes() == src.read_bytes()
