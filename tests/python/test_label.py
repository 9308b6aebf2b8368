"""The labeling app (`rlhf label serve`) through its HTTP API on SQLite and PostgreSQL, in
headless Chromium through WebDriver, and AI feedback through `rlhf serve`.

- auth: no token or a wrong one is 401 everywhere; a labeler never sees another's submissions;
- durability: 32 labelers submit concurrently, the server is SIGKILLed mid-run and restarted,
  and every acknowledged submission is present exactly once;
- concurrency: 32 labelers never put more than `--overlap` on a task; one labeler's concurrent
  `/api/next` calls share one assignment; an expired assignment is refused and goes to another;
- hardening: internal errors reach the client only as an id (the detail is in the log); a JSON
  endpoint refuses another Content-Type (415); a revoked token is 401; SIGTERM stops the server
  cleanly; the database URL comes from RLHF_LABEL_DB and its password is never printed;
- the browser: log in, rank three tasks (a tie, a flag, a comment), the database holds them, the
  export trains `rlhf reward`; a screenshot is saved; a response carrying script shows as text.
"""
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ARTIFACTS, BIN, rlhf, start, stop

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def write_samples(path, n, k=3, xss_first=False):
    with open(path, "w") as f:
        for i in range(n):
            responses = [f"Answer {j} to question {i}: {i + j}." for j in range(k)]
            if xss_first and i == 0:
                responses[1] = XSS
            f.write(json.dumps({"prompt": f"Question {i}: what is {i} + 1?",
                                "responses": responses}) + "\n")


def call(url, path, token=None, body=None, timeout=30, content_type="application/json"):
    """(status, parsed JSON body)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def add_labeler(db, name):
    return rlhf("label", "add-labeler", name, "--db", db).stdout.strip()


def serve(db, samples=None, overlap=1, expire_minutes=None):
    args = ["label", "serve", "--db", db, "--port", "0", "--overlap", overlap]
    if samples:
        args += ["--samples", samples]
    if expire_minutes is not None:
        args += ["--expire-minutes", expire_minutes]
    return start(args)


def sql(db_url, query):
    """Rows of a query run behind the server's back (sqlite3 or psql)."""
    if db_url.startswith("sqlite://"):
        with sqlite3.connect(db_url.removeprefix("sqlite://"), timeout=30) as conn:
            return [tuple(r) for r in conn.execute(query).fetchall()]
    out = subprocess.run(["psql", db_url, "-q", "-At", "-F", "\t", "-c", query], check=True,
                         capture_output=True, text=True).stdout
    return [tuple(int(x) if x.lstrip("-").isdigit() else x for x in line.split("\t"))
            for line in out.splitlines() if line]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'labels.db'}"
    url = request.getfixturevalue("postgres")
    # A fresh schema per test: drop what an earlier test left.
    import subprocess
    subprocess.run(["psql", url, "-q", "-c",
                    "DROP TABLE IF EXISTS submissions, assignments, tasks, labelers, "
                    "_sqlx_migrations CASCADE"], check=True, capture_output=True)
    return url


def rank_randomly(task, rng):
    idx = [r["index"] for r in task["responses"]]
    rng.shuffle(idx)
    return [idx[0], idx[1:]] if rng.random() < 0.3 else idx


def test_auth_and_isolation(db_url, tmp_path):
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 4)
    ann, bob = add_labeler(db_url, "ann"), add_labeler(db_url, "bob")
    proc, url = serve(db_url, samples)
    try:
        for path, body in [("/api/me", None), ("/api/next", None), ("/api/submissions", None),
                           ("/api/submissions/1", None),
                           ("/api/submit", {"task_id": 1, "ranking": [0, 1, 2]})]:
            for token in (None, "wrong", ""):
                status, resp = call(url, path, token, body)
                assert status == 401, (path, token, status)
                assert "message" in resp["error"]
        status, nxt = call(url, "/api/next", ann)
        assert status == 200 and len(nxt["task"]["responses"]) == 3
        task = nxt["task"]
        status, ack = call(url, "/api/submit", ann, {
            "task_id": task["id"], "ranking": [2, [0, 1]], "flags": {"2": ["wrong"]},
            "comment": "ok"})
        assert status == 200 and ack["duplicate"] is False
        # Resending is acknowledged as a duplicate and stored once.
        assert call(url, "/api/submit", ann, {"task_id": task["id"], "ranking": [0, 1, 2]}) \
            == (200, {"id": ack["id"], "duplicate": True})
        # Bob cannot read Ann's submission, and his list is empty.
        assert call(url, f"/api/submissions/{ack['id']}", bob)[0] == 404
        assert call(url, "/api/submissions", bob) == (200, {"submissions": []})
        # Nor submit a task he was not given, nor a malformed ranking.
        assert call(url, "/api/submit", bob, {"task_id": task["id"], "ranking": [0, 1, 2]})[0] == 404
        status, nb = call(url, "/api/next", bob)
        for bad in ([0, 1], [0, 0, 1], [0, 1, 7], [[0, 1, 2], 1]):
            st, err = call(url, "/api/submit", bob, {"task_id": nb["task"]["id"], "ranking": bad})
            assert st == 400, (bad, st, err)
        mine = call(url, "/api/submissions", ann)[1]["submissions"]
        assert [(s["id"], s["ranking"], s["comment"]) for s in mine] == [(ack["id"], [2, [0, 1]], "ok")]
        assert mine[0]["flags"] == {"2": ["wrong"]}
        # A body over the limit is refused before it is read.
        st, err = call(url, "/api/submit", ann, {"task_id": task["id"], "ranking": [0, 1, 2],
                                                 "comment": "x" * 100_000})
        assert st == 413, (st, err)
    finally:
        stop(proc)


def test_stats_report_counts_and_agreement(tmp_path):
    db = f"sqlite://{tmp_path / 'labels.db'}"
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 2, k=3)
    ann, bob = add_labeler(db, "ann"), add_labeler(db, "bob")
    proc, url = serve(db, samples, overlap=2)
    try:
        # Both rank both tasks: the same order on one, opposite orders on the other.
        for token, flip in ((ann, False), (bob, True)):
            for n in range(2):
                task = call(url, "/api/next", token)[1]["task"]
                order = [0, 1, 2] if not (flip and task["prompt"].startswith("Question 1")) else [2, 1, 0]
                assert call(url, "/api/submit", token, {"task_id": task["id"], "ranking": order})[0] == 200
        assert call(url, "/api/next", ann)[1]["task"] is None
    finally:
        stop(proc)
    s = json.loads(rlhf("label", "stats", "--db", db, "--json").stdout)
    assert (s["submissions"], s["tasks_labeled"]) == (4, 2)
    assert [l["labeler"] for l in s["labelers"]] == ["ann", "bob"]
    assert s["agreement"][0]["pairs"] == 6
    assert s["overall_agreement"] == 0.5


def test_acknowledged_submissions_survive_sigkill_exactly_once(db_url, tmp_path):
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 400, k=4)
    tokens = [add_labeler(db_url, f"labeler{i:02d}") for i in range(32)]
    proc, url = serve(db_url, samples, overlap=3)
    acked = {t: [] for t in tokens}
    stop_flag = threading.Event()

    def work(token, seed):
        rng = random.Random(seed)
        while not stop_flag.is_set():
            try:
                st, nxt = call(url, "/api/next", token, timeout=10)
                if st != 200 or nxt["task"] is None:
                    return
                body = {"task_id": nxt["task"]["id"], "ranking": rank_randomly(nxt["task"], rng)}
                st, ack = call(url, "/api/submit", token, body, timeout=10)
                if st == 200:
                    acked[token].append((ack["id"], nxt["task"]["id"]))
            except Exception:
                return  # the server is gone: stop; what was acknowledged is recorded

    threads = [threading.Thread(target=work, args=(t, i)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, no shutdown
    proc.wait()
    stop_flag.set()
    for t in threads:
        t.join()
    total = sum(len(v) for v in acked.values())
    assert total >= 32, f"only {total} submissions before the kill"
    proc, url = serve(db_url)
    try:
        for token, got in acked.items():
            subs = call(url, "/api/submissions", token)[1]["submissions"]
            ids = [s["id"] for s in subs]
            tasks = [s["task_id"] for s in subs]
            assert len(tasks) == len(set(tasks)), "a task twice for one labeler"
            for sid, task in got:
                assert ids.count(sid) == 1, (sid, ids)
                assert tasks[ids.index(sid)] == task
        print(f"\ncrash test ({db_url.split(':')[0]}): {total} acknowledged submissions, all present once")
    finally:
        stop(proc)


# --- concurrency ---------------------------------------------------------------------------------

def run_labelers(url, tokens, work):
    """Runs `work(token, seed)` in one thread per token, all released at once."""
    gate = threading.Barrier(len(tokens))
    threads = [threading.Thread(target=lambda t=t, i=i: (gate.wait(), work(t, i)))
               for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_overlap_holds_under_32_concurrent_labelers(db_url, tmp_path):
    # Regression: on PostgreSQL (READ COMMITTED) the count-then-insert gave a task to more than
    # `--overlap` labelers when they asked at the same moment.
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 40, k=3)
    tokens = [add_labeler(db_url, f"labeler{i:02d}") for i in range(32)]
    proc, url = serve(db_url, samples, overlap=2)
    failures, acked = [], []

    def work(token, seed):
        rng = random.Random(seed)
        while True:
            st, nxt = call(url, "/api/next", token)
            if st != 200:
                failures.append(("next", st, nxt))
                return
            if nxt["task"] is None:
                return
            body = {"task_id": nxt["task"]["id"], "ranking": rank_randomly(nxt["task"], rng)}
            st, ack = call(url, "/api/submit", token, body)
            if st != 200:
                failures.append(("submit", st, ack))
                return
            acked.append(nxt["task"]["id"])

    try:
        run_labelers(url, tokens, work)
    finally:
        stop(proc)
    assert failures == []
    over = sql(db_url, "SELECT task_id, COUNT(*) FROM assignments GROUP BY task_id "
                       "HAVING COUNT(*) > 2")
    assert over == [], f"tasks given to more than 2 labelers: {over}"
    per_task = sql(db_url, "SELECT task_id, COUNT(*) FROM submissions GROUP BY task_id")
    assert len(per_task) == 40 and all(n == 2 for _, n in per_task), per_task
    assert sorted(acked) == sorted(t for t, _ in per_task for _ in range(2))
    print(f"\noverlap test ({db_url.split(':')[0]}): 80 submissions on 40 tasks, 2 each")


def test_concurrent_next_of_one_labeler_shares_one_assignment(db_url, tmp_path):
    # Regression: on PostgreSQL both inserted the same (task, labeler) and one got a 500.
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 20, k=3)
    tokens = [add_labeler(db_url, f"labeler{i}") for i in range(8)]
    proc, url = serve(db_url, samples, overlap=2)
    try:
        for token in tokens:
            got = []
            run_labelers(url, [token] * 4, lambda t, _: got.append(call(url, "/api/next", t)))
            assert [st for st, _ in got] == [200] * 4, got
            assert len({body["task"]["id"] for _, body in got}) == 1, got
    finally:
        stop(proc)


def test_an_expired_assignment_is_refused_and_goes_to_someone_else(db_url, tmp_path):
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 2, k=3)
    ann, bob = add_labeler(db_url, "ann"), add_labeler(db_url, "bob")
    proc, url = serve(db_url, samples, overlap=1, expire_minutes=30)
    try:
        first = call(url, "/api/next", ann)[1]["task"]
        sql(db_url, "UPDATE assignments SET shown_ms = shown_ms - 31 * 60 * 1000")  # 31 min ago
        st, err = call(url, "/api/submit", ann, {"task_id": first["id"], "ranking": [0, 1, 2]})
        assert st == 409 and "expired" in err["error"]["message"], (st, err)
        # Its place is free: bob gets it, and ann is not given it again.
        assert call(url, "/api/next", bob)[1]["task"]["id"] == first["id"]
        second = call(url, "/api/next", ann)[1]["task"]
        assert second["id"] != first["id"]
        for token, task in ((bob, first), (ann, second)):
            st, ack = call(url, "/api/submit", token, {"task_id": task["id"], "ranking": [0, 1, 2]})
            assert st == 200 and not ack["duplicate"], (st, ack)
        assert call(url, "/api/next", ann)[1]["task"] is None
    finally:
        stop(proc)
    assert sql(db_url, "SELECT task_id, labeler_id FROM submissions ORDER BY task_id") \
        == [(first["id"], 2), (second["id"], 1)]


# --- hardening -----------------------------------------------------------------------------------

def serve_logged(db, log_path, samples=None):
    """`rlhf label serve` with its stderr kept in a file; returns (process, url)."""
    log = open(log_path, "w")
    proc = subprocess.Popen([BIN, "label", "serve", "--db", db, "--port", "0",
                             *(["--samples", str(samples)] if samples else [])],
                            stderr=log, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        m = re.search(r" on (http://\S+?)/?$", open(log_path).read(), re.M)
        if m:
            return proc, m.group(1)
        assert proc.poll() is None, open(log_path).read()
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("rlhf label serve did not start")


def test_internal_errors_reach_the_client_only_as_an_id(db_url, tmp_path):
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 2, k=3)
    ann = add_labeler(db_url, "ann")
    log = tmp_path / "serve.log"
    proc, url = serve_logged(db_url, log, samples)
    try:
        assert call(url, "/api/me", ann)[0] == 200
        sql(db_url, "DROP TABLE submissions")  # behind the server's back
        for path in ("/api/me", "/api/next", "/api/submissions"):
            st, err = call(url, path, ann)
            assert st == 500, (path, st, err)
            m = re.fullmatch(r"internal error \(id ([0-9a-f]{8})\)", err["error"]["message"])
            assert m, err
            # The detail is in the server's log under that id.
            deadline = time.time() + 5
            while m.group(1) not in open(log).read() and time.time() < deadline:
                time.sleep(0.05)
            line = next(l for l in open(log) if m.group(1) in l)
            assert "submissions" in line, line
    finally:
        stop(proc)


def test_json_endpoints_need_a_json_content_type(tmp_path):
    # A page on another site can POST text/plain to a local port without a CORS preflight.
    db = f"sqlite://{tmp_path / 'labels.db'}"
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 1, k=3)
    ann = add_labeler(db, "ann")
    proc, url = serve(db, samples)
    try:
        task = call(url, "/api/next", ann)[1]["task"]
        body = {"task_id": task["id"], "ranking": [0, 1, 2]}
        for ct in ("text/plain", "application/x-www-form-urlencoded", None,
                   "application/jsonp"):
            st, err = call(url, "/api/submit", ann, body, content_type=ct)
            assert st == 415 and "application/json" in err["error"]["message"], (ct, st, err)
        assert call(url, "/api/submissions", ann)[1]["submissions"] == []
        st, ack = call(url, "/api/submit", ann, body, content_type="Application/JSON; charset=utf-8")
        assert st == 200 and not ack["duplicate"], (st, ack)
    finally:
        stop(proc)


def test_a_revoked_token_gets_401(db_url, tmp_path):
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 2, k=3)
    ann, bob = add_labeler(db_url, "ann"), add_labeler(db_url, "bob")
    proc, url = serve(db_url, samples)
    try:
        assert call(url, "/api/next", ann)[0] == 200
        r = rlhf("label", "revoke", "ann", "--db", db_url)
        assert "revoked" in r.stderr
        for path in ("/api/me", "/api/next", "/api/submissions"):
            assert call(url, path, ann)[0] == 401, path
        assert call(url, "/api/me", bob)[0] == 200
    finally:
        stop(proc)
    unknown = subprocess.run([BIN, "label", "revoke", "carol", "--db", db_url],
                             capture_output=True, text=True)
    assert unknown.returncode != 0 and "carol" in unknown.stderr


def test_sigterm_stops_the_server_cleanly(tmp_path):
    db = f"sqlite://{tmp_path / 'labels.db'}"
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 1, k=3)
    ann = add_labeler(db, "ann")
    proc, url = serve(db, samples)
    try:
        # A browser keeps its connection open between requests.
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/me", headers={"Authorization": f"Bearer {ann}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.time() - t0 < 5, f"took {time.time() - t0:.1f} s"
        conn.close()
    finally:
        stop(proc)


def test_the_database_url_comes_from_the_environment_and_its_password_is_never_printed(tmp_path):
    db = tmp_path / "from-env.db"
    env = {**os.environ, "RLHF_LABEL_DB": f"sqlite://{db}"}
    r = subprocess.run([BIN, "label", "add-labeler", "ann"], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert db.exists() and not (tmp_path / "labels.db").exists()
    assert sql(f"sqlite://{db}", "SELECT name FROM labelers") == [("ann",)]
    # Nothing listens on port 1: the connection error names the database without its password.
    for cmd in (["label", "stats"], ["label", "add-labeler", "bob"],
                ["label", "serve", "--port", "0"]):
        env["RLHF_LABEL_DB"] = "postgres://rlhf:s3cr%2Fet@127.0.0.1:1/labels"
        r = subprocess.run([BIN, *cmd], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "s3cr" not in r.stderr and "postgres://rlhf:***@127.0.0.1:1/labels" in r.stderr, \
            r.stderr
    help_text = subprocess.run([BIN, "label", "serve", "--help"], env=env, capture_output=True,
                               text=True).stdout
    assert "RLHF_LABEL_DB" in help_text and "s3cr" not in help_text


# --- the browser -------------------------------------------------------------------------------

def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for(fn, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def login(driver, url, token):
    from selenium.webdriver.common.by import By
    driver.get(url + "/")
    wait_for(lambda: driver.find_element(By.ID, "token").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: driver.find_element(By.ID, "task-view").is_displayed())


def test_browser_ranks_three_tasks_and_the_export_trains_a_reward_model(tmp_path, model_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    db = f"sqlite://{tmp_path / 'labels.db'}"
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 5, k=3)
    token = add_labeler(db, "ann")
    proc, url = serve(db, samples)
    driver = browser()
    try:
        login(driver, url, token)
        assert driver.find_element(By.ID, "who").text == "ann"
        expected = []
        for n in range(3):
            prompt = driver.find_element(By.ID, "prompt").text
            selects = driver.find_elements(By.CSS_SELECTOR, "select.rank")
            assert len(selects) == 3
            index = [int(s.get_attribute("data-index")) for s in selects]
            # Shown order 1st > (2nd = 3rd) on the first task, strict order otherwise.
            ranks = ["1", "2", "2"] if n == 0 else ["1", "2", "3"]
            for s, r in zip(selects, ranks):
                Select(s).select_by_value(r)
            expected.append((prompt, [index[0], sorted(index[1:])] if n == 0 else index))
            driver.find_elements(By.CSS_SELECTOR, "input.flag")[0].click()
            driver.find_element(By.ID, "comment").send_keys(f"task {n}")
            if n == 2:
                os.makedirs(ARTIFACTS, exist_ok=True)
                driver.save_screenshot(os.path.join(ARTIFACTS, "label-page.png"))
            driver.find_element(By.ID, "submit").click()
            wait_for(lambda: f"you: {n + 1} done" in driver.find_element(By.ID, "progress").text)
        assert os.path.getsize(os.path.join(ARTIFACTS, "label-page.png")) > 10_000
    finally:
        driver.quit()
        stop(proc)
    out = tmp_path / "rankings.jsonl"
    rlhf("label", "export", "--db", db, "--out", out)
    rows = [json.loads(l) for l in open(out)]
    got = [(r["prompt"], [sorted(g) if isinstance(g, list) else g for g in r["ranking"]]) for r in rows]
    assert got == expected
    assert [r["comment"] for r in rows] == ["task 0", "task 1", "task 2"]
    assert all(r["labeler"] == "ann" and len(r["flags"]) == 1 for r in rows)
    # What `rlhf reward` trains on.
    r = rlhf("reward", "--model", model_dir, "--data", out, "--out", tmp_path / "rm",
             "--set", "eval_fraction=0", "--set", "trainer.max_steps=2",
             "--set", "trainer.batch_size=2")
    assert os.path.exists(tmp_path / "rm" / "model.safetensors"), r.stderr


def test_model_output_with_script_is_shown_as_text(tmp_path):
    from selenium.webdriver.common.by import By
    db = f"sqlite://{tmp_path / 'labels.db'}"
    samples = tmp_path / "s.jsonl"
    write_samples(samples, 1, k=3, xss_first=True)
    token = add_labeler(db, "ann")
    proc, url = serve(db, samples)
    driver = browser()
    try:
        login(driver, url, token)
        texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "pre.text")]
        assert XSS in texts, texts
        time.sleep(0.5)  # give an injected onerror handler time to fire
        assert driver.execute_script("return typeof window.pwned") == "undefined"
        assert not driver.find_elements(By.CSS_SELECTOR, "#responses img")
    finally:
        driver.quit()
        stop(proc)


def test_judge_ranks_a_sample_file_through_rlhf_serve(tmp_path):
    # A nano model (context 1024: the judge prompt is long) fine-tuned to always answer
    # "B > A = C" plays the judge.
    rlhf("data", "--out", tmp_path / "world", "--set", "corpus_docs=300", "--set",
         "sft_examples=20", "--set", "prompts=20", "--set", "eval_examples=20")
    rlhf("pretrain", "--data", tmp_path / "world", "--out", tmp_path / "base", "--preset", "nano",
         "--set", "max_positions=1024", "--set", "trainer.max_steps=10",
         "--set", "trainer.eval_every=0", "--set", "trainer.checkpoint_every=0")
    sft = tmp_path / "judge.jsonl"
    with open(sft, "w") as f:
        for i in range(64):
            f.write(json.dumps({"prompt": f"Rank the responses to question {i}.",
                                "completion": "B > A = C"}) + "\n")
    rlhf("sft", "--model", tmp_path / "base", "--data", sft, "--out", tmp_path / "judge",
         "--set", "trainer.max_steps=150", "--set", "trainer.lr=3e-3",
         "--set", "trainer.eval_every=0", "--set", "eval_fraction=0")
    proc, url = start(["serve", "--model", tmp_path / "judge", "--port", "0"])
    try:
        samples = tmp_path / "s.jsonl"
        write_samples(samples, 3, k=3)
        out = tmp_path / "rankings.jsonl"
        r = rlhf("label", "--judge", f"openai:{url.removesuffix('/v1')}", "--samples", samples,
                 "--out", out)
        rows = [json.loads(l) for l in open(out)]
        assert len(rows) == 3, r.stderr
        assert all(row["ranking"] == [1, [0, 2]] for row in rows), rows
    finally:
        stop(proc)
