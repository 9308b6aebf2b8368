"""`rlhf serve` through the official `openai` client, `rlhf chat` through a pseudo-terminal.

Run by scripts/test.sh after the release build (RLHF_BIN points at the binary). The model is a
nano checkpoint pretrained for a few steps here: its text is noise, but the API contract
(shapes, counts, streaming equal to non-streaming, stop sequences, seeds, errors) holds for any
model.
"""
import json
import os
import pty
import select
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import ARTIFACTS, BIN
from serve_load import run_load, start_server

QUESTION = "Tom has 5 apples. He eats 2. How many apples does Tom have now?"


@pytest.fixture(scope="session")
def server(model_dir):
    proc, url = start_server(BIN, model_dir, ["--threads", "1"])
    yield proc, url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server[1], api_key="unused", max_retries=0, timeout=120)


def chat(client, **kw):
    args = dict(model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
                temperature=0)
    args.update(kw)
    return client.chat.completions.create(**args)


def test_models_list(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].object == "model"
    assert client.models.retrieve("tiny").id == "tiny"


def test_completions_counts_and_finish(client):
    r = client.completions.create(model="tiny", prompt="Tom has 5 apples.", max_tokens=7,
                                  temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 7
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 7


def test_chat_completion(client):
    r = chat(client)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # Greedy decoding is deterministic.
    assert chat(client).choices[0].message.content == r.choices[0].message.content


def test_streamed_chat_equals_non_streamed_at_temperature_zero(client):
    whole = chat(client)
    stream = chat(client, stream=True, stream_options={"include_usage": True})
    parts, finish, usage, roles = [], None, None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            parts.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert roles == ["assistant"]
    assert "".join(parts) == whole.choices[0].message.content
    assert len([p for p in parts if p]) >= 2, "the answer should arrive in several chunks"
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_n_two_choices_and_seeds(client):
    kw = dict(n=2, temperature=1.0, seed=7, max_tokens=16)
    a, b = chat(client, **kw), chat(client, **kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    # The two choices draw from different random streams.
    assert a.choices[0].message.content != a.choices[1].message.content
    c = chat(client, n=2, temperature=1.0, seed=8, max_tokens=16)
    assert [x.message.content for x in c.choices] != [x.message.content for x in a.choices]


def test_stop_sequence_cuts_the_text(client):
    full = chat(client, max_tokens=32).choices[0].message.content
    assert len(full) >= 6, f"need some text to cut: {full!r}"
    stop = full[len(full) // 2:len(full) // 2 + 2]
    r = chat(client, max_tokens=32, stop=[stop, "\u2603never"])
    assert r.choices[0].message.content == full[:full.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    streamed = chat(client, max_tokens=32, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
        full[:full.find(stop)]
    comp = client.completions.create(model="tiny", prompt=QUESTION, max_tokens=32, temperature=0)
    text = comp.choices[0].text
    if len(text) >= 6:
        stop = text[3:5]
        cut = client.completions.create(model="tiny", prompt=QUESTION, max_tokens=32,
                                        temperature=0, stop=stop)
        assert cut.choices[0].text == text[:text.find(stop)]


def test_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=3, max_tokens=8)
    content = r.choices[0].logprobs.content
    assert 1 <= len(content) <= 8
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        lps = [x.logprob for x in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5
    comp = client.completions.create(model="tiny", prompt="Tom has", max_tokens=4,
                                     temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(len(d) == 2 for d in lp.top_logprobs)


def expect_error(fn, cls, status, needle):
    with pytest.raises(cls) as info:
        fn()
    e = info.value
    assert e.status_code == status
    body = e.body if isinstance(e.body, dict) else {}
    message = body.get("message") or body.get("error", {}).get("message", "")
    assert needle in message, message
    return e


def test_errors_in_openai_shape(client, server):
    expect_error(lambda: client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]),
        openai.NotFoundError, 404, "does not exist")
    expect_error(lambda: chat(client, max_tokens=10 ** 6), openai.BadRequestError, 400,
                 "max_tokens is too large")
    e = expect_error(lambda: chat(client, max_tokens=250), openai.BadRequestError, 400, "context")
    assert e.code == "context_length_exceeded"
    expect_error(lambda: chat(client, n=0), openai.BadRequestError, 400, "n must be")
    expect_error(lambda: chat(client, temperature=3), openai.BadRequestError, 400, "temperature")
    expect_error(lambda: chat(client, messages=[]), openai.BadRequestError, 400, "messages")
    # Malformed JSON and a too large body, sent by hand.
    for body, status, needle in [(b"{bad", 400, "not valid JSON"),
                                 (b'{"model": "tiny"}', 400, "missing field"),
                                 (b"x" * (2 << 20), 413, "")]:
        req = urllib.request.Request(server[1] + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=30)
        assert info.value.code == status
        err = json.loads(info.value.read())["error"]
        assert err["type"] == "invalid_request_error" and needle in err["message"]


def test_api_key_is_required_when_set(model_dir):
    proc, url = start_server(BIN, model_dir, ["--threads", "1", "--api-key", "s3cret"])
    try:
        bad = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
        expect_error(lambda: bad.models.list(), openai.AuthenticationError, 401, "API key")
        good = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert good.models.list().data[0].id == "tiny"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_load_64_clients_times_10_requests(server):
    proc, url = server
    stats = run_load(url, "tiny", clients=64, requests=10, max_tokens=16, pid=proc.pid)
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "serve-load.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print("\nload:", json.dumps(stats))
    assert stats["errors"] == 0, stats["first_errors"]
    assert stats["ok"] == 640


def read_until(fd, needle, timeout=60):
    out, deadline = b"", time.time() + timeout
    while needle not in out:
        left = deadline - time.time()
        assert left > 0, f"timed out waiting for {needle!r}; got {out!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF before {needle!r}; got {out!r}"
            out += chunk
    return out.decode(errors="replace")


def test_chat_in_a_pseudo_terminal_answers_two_turns(model_dir):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(BIN, [BIN, "--device", "cpu", "--threads", "1", "chat", "--model", model_dir,
                       "--temperature", "1", "--seed", "1", "--max-tokens", "12"])
    try:
        read_until(fd, b"> ")
        os.write(fd, b"How many apples?\r")
        first = read_until(fd, b"\n> ")
        os.write(fd, b"And pears?\r")
        second = read_until(fd, b"\n> ")
        os.write(fd, b"/history\r")
        history = read_until(fd, b"\n> ")
        os.write(fd, b"/exit\r")
    finally:
        os.waitpid(pid, 0)
    # Each turn echoes the line, prints an answer, then prompts again.
    assert "How many apples?" in first and "And pears?" in second
    turns = [l for l in history.splitlines() if l.startswith("[")]
    assert [t.split("]")[0] for t in turns] == ["[user", "[assistant", "[user", "[assistant"]
    assert turns[0] == "[user] How many apples?" and turns[2] == "[user] And pears?"
    # The answer printed after the first question is the one kept in the history.
    printed = first.split("How many apples?", 1)[1].rsplit("\n> ", 1)[0].replace("\r\n", "\n")
    kept = history.split("[assistant] ", 1)[1].split("\n[user] ", 1)[0].replace("\r\n", "\n")
    assert printed.strip(), f"no answer printed: {first!r}"
    assert printed.strip() == kept.strip()
