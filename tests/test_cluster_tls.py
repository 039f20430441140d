"""``--scheduler``: addresses featpipe cannot use are one line (exit 2) before any work, and a
``tls://`` scheduler is reached with Dask's security settings from ``--tls-ca-file/--tls-cert/
--tls-key`` (certificates made here with the openssl command line; a real TLS scheduler and
worker on loopback)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from featpipe import open_cache
from featpipe.cli import main
from featpipe.run.cluster import ClusterError, check_address, security
from media import write_clip

LEAF = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
"""


def make_certs(folder: Path, name: str) -> dict[str, Path]:
    """A CA and one certificate it signed (for the scheduler, the worker and the client alike)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, key, csr, cert = (folder / f"{name}-{x}" for x in ("ca.pem", "ca.key", "key.pem", "csr", "cert.pem"))
    (folder / "leaf.ext").write_text(LEAF)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        f"/CN={name}-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(folder / "leaf.ext"),
    )
    return {"ca": ca, "cert": cert, "key": key}


def _extract(inputs, cache, *args: str):
    return CliRunner().invoke(main, ["extract", str(inputs), "-o", str(cache), "--audio", "priors", "--quiet", *args])


@pytest.mark.parametrize(
    "address, words",
    [
        ("foo", "not an address"),
        ("tcp://host", "not an address"),
        ("tcp://host:99999", "not an address"),
        ("inproc://x", "inside this one process"),
        ("ucx://127.0.0.1:8786", "UCX"),
        ("ws://h:1", "not a transport"),
    ],
)
def test_a_bad_scheduler_address_is_one_line(tmp_path, address, words):
    with pytest.raises(ClusterError, match=words):
        check_address(address)
    r = _extract(tmp_path / "v.mp4", tmp_path / "c.h5", "--scheduler", address)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and words in r.output, r.output
    assert not (tmp_path / "c.h5").exists()  # refused before the cache is touched


def test_tls_needs_certificates_and_certificates_need_tls(tmp_path):
    with pytest.raises(ClusterError, match="a tls:// scheduler needs --tls-ca-file"):
        security("tls://127.0.0.1:8786")
    assert check_address("127.0.0.1:8786") == "tcp://127.0.0.1:8786" and security("tcp://h:1") is None
    (tmp_path / "ca.pem").write_text("x")
    r = _extract(tmp_path, tmp_path / "c.h5", "--tls-ca-file", str(tmp_path / "ca.pem"))
    assert r.exit_code == 2 and "go with --scheduler tls://" in r.output, r.output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command line makes the test certificates")
def test_extract_through_a_tls_scheduler(tmp_path):
    from distributed import LocalCluster
    from distributed.security import Security

    good, other = make_certs(tmp_path / "certs", "good"), make_certs(tmp_path / "certs", "other")
    videos = tmp_path / "videos"
    videos.mkdir()
    write_clip(videos / "a.mp4", seconds=2, fps=10)
    server = Security(
        tls_ca_file=str(good["ca"]),
        tls_scheduler_cert=str(good["cert"]),
        tls_scheduler_key=str(good["key"]),
        tls_worker_cert=str(good["cert"]),
        tls_worker_key=str(good["key"]),
        tls_client_cert=str(good["cert"]),
        tls_client_key=str(good["key"]),
        require_encryption=True,
    )  # the cluster object is a client too
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tls://",
        host="127.0.0.1",
        security=server,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        cache = tmp_path / "c.h5"

        def certs(c: dict) -> tuple[str, ...]:
            return ("--tls-ca-file", str(c["ca"]), "--tls-cert", str(c["cert"]), "--tls-key", str(c["key"]))

        r = _extract(videos, cache, "--scheduler", address)  # no certificates: one line, nothing done
        assert r.exit_code == 2 and "a tls:// scheduler needs --tls-ca-file" in r.output, r.output
        r = _extract(videos, cache, "--scheduler", address, *certs(other))  # another CA's: refused
        assert r.exit_code == 2 and r.output.startswith("featpipe: error: cannot reach the Dask scheduler"), r.output
        assert r.output.count("\n") == 1
        r = _extract(videos, cache, "--scheduler", address, *certs(good))
        assert r.exit_code == 0, r.output
    with open_cache(tmp_path / "c.h5") as c:
        assert c.videos == ["a"] and c.get("a", "priors").data.shape[0] == 2


def test_tls_certificates_from_the_dask_config(tmp_path):
    # without --tls-* options, Dask's own settings (distributed.comm.tls.*) are used
    import dask

    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-")
    with dask.config.set(
        {
            "distributed.comm.tls.ca-file": str(tmp_path / "ca.pem"),
            "distributed.comm.tls.client.cert": str(tmp_path / "cert.pem"),
            "distributed.comm.tls.client.key": str(tmp_path / "key.pem"),
        }
    ):
        sec = security("tls://127.0.0.1:8786")
    assert sec.tls_ca_file == str(tmp_path / "ca.pem") and sec.tls_client_cert == str(tmp_path / "cert.pem")
    assert sec.require_encryption
    with pytest.raises(ClusterError, match="--tls-key .*cannot read"):
        security("tls://127.0.0.1:8786", (str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "no")))
