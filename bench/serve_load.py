"""Load test of `rlhf serve`: C concurrent clients each send R chat requests one after another
through the official `openai` client; reports errors, latency percentiles, throughput and the
server's peak memory (VmHWM from /proc).

    python bench/serve_load.py --model DIR [--clients 64] [--requests 10] [--max-tokens 16]

Starts its own server (release build) unless --url is given. tests/python imports `run_load`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(binary, model, extra=()):
    """Starts `rlhf serve --port 0` and returns (process, base_url) once it listens."""
    proc = subprocess.Popen(
        [binary, "--device", "cpu", "serve", "--model", model, "--port", "0", *extra],
        stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError(f"rlhf serve exited with {proc.wait()}")
        if " on http://" in line:
            url = line.strip().rsplit(" on ", 1)[1]
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, url
    proc.kill()
    raise RuntimeError("rlhf serve did not start within 120 s")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_load(base_url, model, clients=64, requests=10, max_tokens=16, pid=None):
    import openai

    latencies, errors, tokens = [], [], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(c):
        cl = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
        barrier.wait()
        for r in range(requests):
            t0 = time.perf_counter()
            try:
                resp = cl.chat.completions.create(
                    model=model, max_tokens=max_tokens, temperature=1.0, seed=c * 1000 + r,
                    messages=[{"role": "user", "content": f"Client {c}, request {r}: how many?"}])
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    tokens[0] += resp.usage.completion_tokens
            except Exception as e:  # every failure is counted, none hidden
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")
    return {
        "clients": clients, "requests_per_client": requests, "max_tokens": max_tokens,
        "ok": len(latencies), "errors": len(errors), "first_errors": errors[:3],
        "wall_s": round(wall, 3),
        "p50_ms": round(1000 * pct(50), 1), "p99_ms": round(1000 * pct(99), 1),
        "mean_ms": round(1000 * statistics.mean(lat), 1) if lat else None,
        "requests_per_s": round(len(latencies) / wall, 1),
        "completion_tokens_per_s": round(tokens[0] / wall, 1),
        "server_peak_rss_mib": round(peak_rss_mib(pid), 1) if pid else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint dir (the server is started here)")
    ap.add_argument("--url", help="an already running server, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--name", help="model name on --url")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/rlhf"))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", default="2", help="libtorch threads of the started server")
    ap.add_argument("--compare-static", action="store_true",
                    help="also run the same load against a server with --static-batching")
    a = ap.parse_args()
    if a.url:
        name = a.name
        if name is None:
            import openai
            name = openai.OpenAI(base_url=a.url, api_key="unused").models.list().data[0].id
        print(json.dumps(run_load(a.url, name, a.clients, a.requests, a.max_tokens), indent=1))
        return
    name = os.path.basename(os.path.abspath(a.model))
    modes = [("continuous", [])] + ([("static", ["--static-batching"])] if a.compare_static else [])
    for mode, extra in modes:
        proc, url = start_server(a.binary, a.model, ["--threads", a.threads, *extra])
        try:
            stats = run_load(url, name, a.clients, a.requests, a.max_tokens, proc.pid)
            print(json.dumps({"batching": mode, **stats}, indent=1))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
