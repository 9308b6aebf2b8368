"""Fixtures shared by the Python tests: the `rlhf` binary, a nano checkpoint pretrained for a few
steps, servers started on free ports, and a throw-away PostgreSQL cluster."""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
BIN = os.environ.get("RLHF_BIN", os.path.join(ROOT, "target/release/rlhf"))
ARTIFACTS = os.path.join(ROOT, "target/test-artifacts")


# These tests compare with transformers, PEFT and the OpenAI client at fp32 tolerances, so they
# pin fp32 products; `--precision bf16` has its own tests (crates/model/tests/precision.rs and
# the CLI's pipeline tests).
RUNTIME = ["--device", "cpu", "--threads", "1", "--precision", "fp32"]


def rlhf(*args, **kw):
    """Runs `rlhf --device cpu --threads 1 --precision fp32 ARGS`, failing the test with its
    stderr."""
    r = subprocess.run([BIN, *RUNTIME, *map(str, args)],
                       capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"rlhf {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def start(args, marker=" on http://", timeout=120):
    """Starts `rlhf ARGS` and returns (process, url printed after `marker`)."""
    proc = subprocess.Popen([BIN, *RUNTIME, *map(str, args)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"rlhf {args[0]} exited with {proc.wait()}")
        if marker in line:
            url = "http://" + line.strip().split(marker, 1)[1]
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, url.rstrip("/")
    proc.kill()
    raise RuntimeError(f"rlhf {args[0]} did not start")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A nano checkpoint pretrained for 20 steps (its text is noise; the contracts hold)."""
    d = tmp_path_factory.mktemp("models")
    rlhf("data", "--out", d / "world", "--set", "corpus_docs=500", "--set", "sft_examples=50",
         "--set", "prompts=50", "--set", "eval_examples=20")
    rlhf("pretrain", "--data", d / "world", "--out", d / "tiny", "--preset", "nano",
         "--set", "trainer.max_steps=20", "--set", "trainer.eval_every=0",
         "--set", "trainer.checkpoint_every=0")
    return str(d / "tiny")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster from Debian's package on a loopback port; yields a database URL.
    Skipped when PostgreSQL is not installed, unless RLHF_REQUIRE_PG=1 (the test script sets it)."""
    bindir = next((d for d in ["/usr/lib/postgresql/" + v + "/bin" for v in
                               sorted(os.listdir("/usr/lib/postgresql"), reverse=True)]
                   if os.path.exists(d + "/initdb")), None) if os.path.isdir("/usr/lib/postgresql") else None
    if bindir is None:
        if os.environ.get("RLHF_REQUIRE_PG") == "1":
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed")
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    d = pathlib.Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
    data, sock = d / "data", d / "sock"
    sock.mkdir()
    # initdb refuses to run as root: run the server as the package's `postgres` user.
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(d, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(as_pg + [bindir + "/initdb", "-D", str(data), "-U", "rlhf", "--auth=trust",
                            "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run(as_pg + [bindir + "/pg_ctl", "-D", str(data), "-w", "-l", str(d / "log"),
                            "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
                            "start"], check=True, capture_output=True)
    subprocess.run(as_pg + [bindir + "/createdb", "-h", "127.0.0.1", "-p", str(port), "-U",
                            "rlhf", "labels"], check=True, capture_output=True)
    yield f"postgres://rlhf@127.0.0.1:{port}/labels"
    subprocess.run(as_pg + [bindir + "/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
