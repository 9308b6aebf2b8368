"""`rlhf serve` under hostile clients, end to end through its socket: huge stop sequences do not
slow anyone else down, a slowloris client is cut after the header timeout while others are
served, /health reports the engine, and SIGTERM stops the server cleanly.

The engine-level and in-process API checks live in crates/serve/tests and crates/http; these
show the running binary is wired to them.
"""
import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request

from conftest import BIN
from serve_load import start_server


def post(url, body, timeout=120):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/completions", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def timed(url, body):
    t0 = time.perf_counter()
    status, _ = post(url, body)
    assert status == 200
    return time.perf_counter() - t0


def test_huge_stops_do_not_slow_other_clients(model_dir):
    proc, url = start_server(BIN, model_dir, ["--threads", "1"])
    try:
        normal = {"model": "tiny", "prompt": "Tom has 5 apples.", "max_tokens": 32,
                  "temperature": 0}
        timed(url, normal)  # warm up
        baseline = statistics.median(timed(url, normal) for _ in range(9))
        # Four 250 kB stops on a long, wide request, sent over and over by 4 clients.
        huge = ["ab" * 125_000 + str(i) for i in range(4)]
        hostile = json.dumps({"model": "tiny", "prompt": "Tom", "max_tokens": 200, "n": 16,
                              "stop": huge}).encode()
        done, statuses = threading.Event(), []

        def attack():
            # 4 clients at ~15 requests/s each: 60 MB/s of stops to parse and refuse. The point
            # is what they cost the engine, not a flood that would load any server's CPU.
            while not done.is_set():
                statuses.append(post(url, hostile)[0])
                time.sleep(0.05)

        attackers = [threading.Thread(target=attack) for _ in range(4)]
        for t in attackers:
            t.start()
        time.sleep(0.5)
        under_attack = statistics.median(timed(url, normal) for _ in range(9))
        done.set()
        for t in attackers:
            t.join(timeout=300)
        print(f"\nlatency alone {baseline * 1000:.1f} ms, beside 4 clients sending 4 x 250 kB "
              f"stops {under_attack * 1000:.1f} ms; their answers: {sorted(set(statuses))}")
        assert statuses and set(statuses) == {400}, statuses
        assert under_attack <= 2 * baseline + 0.05, (baseline, under_attack)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_slowloris_is_cut_and_others_are_served_and_sigterm_stops_cleanly(model_dir):
    proc, url = start_server(BIN, model_dir, ["--threads", "1", "--header-timeout", "1",
                                              "--max-connections", "64"])
    try:
        host, port = url.split("//")[1].split("/")[0].split(":")
        slow = []
        for _ in range(16):
            s = socket.create_connection((host, int(port)))
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        t0 = time.time()
        # Others are served while the slow connections hang.
        assert post(url, {"model": "tiny", "prompt": "Tom", "max_tokens": 4})[0] == 200
        for s in slow:
            s.settimeout(10)
            while True:
                try:
                    s.sendall(b"X-Slow: a\r\n")
                    if s.recv(4096) == b"":
                        break
                except (ConnectionResetError, BrokenPipeError):
                    break
                except socket.timeout:
                    raise AssertionError("a slowloris connection was held for 10 s")
        cut_after = time.time() - t0
        print(f"\n16 slowloris connections cut after {cut_after:.2f} s (header timeout 1 s)")
        assert cut_after < 5
        with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/health", timeout=30) as r:
            health = json.loads(r.read())
        assert health["status"] == "ok" and health["engine"]["alive"] is True, health
        assert health["engine"]["queued"] == 0, health
    finally:
        t0 = time.time()
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, f"SIGTERM: exit code {code}"
    assert time.time() - t0 < 10


def test_the_label_app_cuts_slow_clients_too(tmp_path):
    from conftest import start, stop
    proc, url = start(["label", "serve", "--db", f"sqlite://{tmp_path}/l.db", "--port", "0",
                       "--header-timeout", "1"])
    try:
        host, port = url.split("//")[1].rstrip("/").split(":")
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        s.settimeout(10)
        t0 = time.time()
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("the label app held a slowloris connection for 10 s")
        assert time.time() - t0 < 5
        with urllib.request.urlopen(url + "/", timeout=30) as r:
            assert r.status == 200
    finally:
        stop(proc)
    assert proc.returncode == 0
