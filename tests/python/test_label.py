"""The labeling app (`rlhf label serve`) through its HTTP API on SQLite and PostgreSQL, in
headless Chromium through WebDriver, and AI feedback through `rlhf serve`.

- auth: no token or a wrong one is 401 everywhere; a labeler never sees another's submissions;
- durability: 32 labelers submit concurrently, the server is SIGKILLed mid-run and restarted,
  and every acknowledged submission is present exactly once;
- the browser: log in, rank three tasks (a tie, a flag, a comment), the database holds them, the
  export trains `rlhf reward`; a screenshot is saved; a response carrying script shows as text.
"""
import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ARTIFACTS, rlhf, start, stop

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def write_samples(path, n, k=3, xss_first=False):
    with open(path, "w") as f:
        for i in range(n):
            responses = [f"Answer {j} to question {i}: {i + j}." for j in range(k)]
            if xss_first and i == 0:
                responses[1] = XSS
            f.write(json.dumps({"prompt": f"Question {i}: what is {i} + 1?",
                                "responses": responses}) + "\n")


def call(url, path, token=None, body=None, timeout=30):
    """(status, parsed JSON body)."""
    headers = {"Content-Type": "application/json"}
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


def serve(db, samples=None, overlap=1):
    args = ["label", "serve", "--db", db, "--port", "0", "--overlap", overlap]
    if samples:
        args += ["--samples", samples]
    return start(args)


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
