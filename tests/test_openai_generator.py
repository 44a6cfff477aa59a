"""The OpenAI-protocol generator against a small chat-completions server on loopback: prompts cross
topic x audience x style, server errors are retried, an interrupted run resumes from its cache
without asking twice, and the API key never leaves the Authorization header."""

import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from data import openai_generator as og
from data import prepare_textbooks as pt
from data import textbook_generator as tg

KEY = "sk-test-0123456789-SECRET"
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "prepare_textbooks.py")


def section(seed) -> str:
    """A distinct, deterministic 'textbook section' of made-up words for each seed."""
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(1, 3)))
                    for _ in range(150))


def completion(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]}).encode()


class ChatServer:
    """POST /v1/chat/completions on 127.0.0.1. `failures` is a list of HTTP codes to answer before
    answering normally; after `stop_after` answers every request gets HTTP `then`, or with
    then="hang" no answer at all until the server closes. With `echo`, every answer ends with the
    Authorization header it came with."""

    def __init__(self, name="A", failures=(), stop_after=None, then=503, echo=False):
        self.name, self.failures, self.stop_after, self.then = name, list(failures), stop_after, then
        self.echo = echo
        self.prompts, self.requested, self.auth, self.answered = [], [], [], 0
        self.lock, self.released = threading.Lock(), threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions"
                with server.lock:
                    server.auth.append(self.headers.get("Authorization"))
                    server.requested.append(body["messages"][0]["content"])
                    if server.failures:
                        code = server.failures.pop(0)
                    elif server.stop_after is not None and server.answered >= server.stop_after:
                        code = server.then
                    else:
                        code = 200
                        server.answered += 1
                        server.prompts.append(body["messages"][0]["content"])
                if code == "hang":
                    server.released.wait()
                    return
                if code != 200:
                    # a careless server that echoes the request's credentials in its error page
                    msg = f"error {code}; you sent {self.headers.get('Authorization')}".encode()
                    self.send_response(code)
                    if code == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                text = server.answer(body["messages"][0]["content"])
                finish = "stop"
                if server.echo:  # a careless server that echoes the request's credentials in its answer
                    text += f"\n\nYou sent {self.headers.get('Authorization')}."
                    finish = f"stop ({self.headers.get('Authorization')})"
                reply = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": finish,
                                                 "message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, prompt: str) -> str:
        """A distinct, deterministic 'textbook section' for each prompt, tagged with the server."""
        return f"Served by {self.name}. {prompt[:60]}\n\n" + section(hashlib.sha256(prompt.encode()).hexdigest())

    def close(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Server:
    """Any GET or POST on 127.0.0.1, answered by respond(handler) -> (code, headers, body). Records
    the method and the Authorization header of every request in `seen`."""

    def __init__(self, respond):
        self.seen = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append((self.command, self.headers.get("Authorization")))
                code, headers, body = respond(self)
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class SameAnswerServer(ChatServer):
    """A ChatServer that gives every prompt the same answer."""

    def __init__(self, text, **kwargs):
        self.text = text
        super().__init__(**kwargs)

    def answer(self, prompt: str) -> str:
        return self.text


def args(out_dir, url, *extra):
    return ["--out_dir", str(out_dir), "--num_proc", "1", "--generator", "openai", "--model", "test-model",
            "--api_base", url, "--mix", "synthetic=1", "--synthetic_tokens", "3000", "--backoff", "0.01",
            "--concurrency", "3", *extra]


def decoded_documents(out_dir) -> list:
    """The distinct documents of the build in out_dir (train repeats documents to reach its mixture)."""
    from tokenizer import Tokenizer
    tok = Tokenizer()
    docs = set()
    with open(os.path.join(out_dir, "meta.json")) as f:
        listing = json.load(f)["shards"]
    for split in ("train", "val"):
        for shard in listing[split]:
            ids = np.fromfile(os.path.join(out_dir, shard["file"]), dtype=np.uint16)
            ends = np.flatnonzero(ids == 50256)
            docs.update(tok.decode(ids[s:e]) for s, e in zip(np.concatenate([[0], ends[:-1] + 1]), ends))
    return sorted(docs)


def test_prompts_cross_topic_audience_and_style():
    plan = og.prompt_plan(seed=0)
    assert len(plan) == len(tg.seed_topics()) * len(tg.AUDIENCES) * len(tg.STYLES) == len(set(plan))
    assert plan == og.prompt_plan(seed=0) and plan != og.prompt_plan(seed=1)
    topic, audience, style = plan[0]
    text = og.prompt_text(topic, audience, style)
    assert topic in text and audience in text and style in text
    assert "doctest" in og.prompt_text("Recursion, at a zoo", "college students", "tutorial")
    assert "doctest" not in og.prompt_text("Density, at a zoo", "college students", "tutorial")


def test_generates_through_server_errors_and_never_logs_the_key(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = ChatServer(failures=[500, 429, 502])
    try:
        pt.main(args(tmp_path / "out", server.url))
    finally:
        server.close()
    meta_text = (tmp_path / "out" / "meta.json").read_text()
    gen = json.loads(meta_text)["sources"]["synthetic"]["generator"]
    assert gen["retries"] == 3 and gen["requests"] == server.answered + 3
    assert gen["answers_new"] >= 1 and gen["answers_from_cache"] == 0
    assert set(server.auth) == {f"Bearer {KEY}"}  # the key went where it belongs...
    logs = capfd.readouterr()
    cache_text = (tmp_path / "out" / "openai_cache.jsonl").read_text()
    for where in (meta_text, cache_text, logs.out, logs.err):  # ...and nowhere else
        assert KEY not in where
    assert "retrying" in logs.err
    # the corpus is the answers to the first prompts of the plan, in order, up to the token target
    plan = og.prompt_plan(1337)
    expected = [server.answer(og.prompt_text(*plan[i])) for i in range(gen["answers_new"])]
    docs = decoded_documents(tmp_path / "out")
    assert sorted(docs) == sorted(expected[:len(docs)]) and len(docs) >= 1
    assert all(json.loads(line)["key"] for line in cache_text.splitlines())


def test_interrupted_run_resumes_from_the_cache_without_asking_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    first = ChatServer(name="A", stop_after=4, then=503)  # answers 4 prompts, then goes down
    try:
        with pytest.raises(RuntimeError, match="failed 3 times.*rerunning continues") as err:
            pt.main(args(tmp_path / "out", first.url, "--retries", "2"))
    finally:
        first.close()
    assert KEY not in str(err.value)
    cache_file = tmp_path / "out" / "openai_cache.jsonl"
    cached = [json.loads(line) for line in cache_file.read_text().splitlines()]
    assert len(cached) == 4 and sorted(r["prompt"] for r in cached) == sorted(first.prompts)
    assert not (tmp_path / "out" / "meta.json").exists()
    with open(cache_file, "a") as f:  # a crash in the middle of writing a line
        f.write('{"key": "abc", "text": "half a li')

    second = ChatServer(name="B")
    try:
        pt.main(args(tmp_path / "out", second.url))
    finally:
        second.close()
    assert not set(second.prompts) & set(first.prompts)  # nothing is paid for twice
    gen = json.loads((tmp_path / "out" / "meta.json").read_text())["sources"]["synthetic"]["generator"]
    assert gen["cached_at_start"] == 4 and gen["torn_cache_lines"] == 1
    docs = decoded_documents(tmp_path / "out")
    served_by_a = [d for d in docs if d.startswith("Served by A.")]
    plan_prompts = [og.prompt_text(*p) for p in og.prompt_plan(1337)[:len(docs)]]
    assert len(served_by_a) == sum(p in first.prompts for p in plan_prompts) >= 1
    # the cache is still valid JSONL after the torn line, with every answer once
    lines = cache_file.read_text().splitlines()
    records = [json.loads(line) for line in lines if not line.startswith('{"key": "abc"')]
    assert len({r["key"] for r in records}) == len(records) == 4 + len(second.prompts)


def test_a_rejected_request_fails_at_once_with_the_key_scrubbed(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = ChatServer(failures=[401] * 10)
    try:
        with pytest.raises(RuntimeError, match="HTTP 401") as err:
            pt.main(args(tmp_path / "out", server.url))
    finally:
        server.close()
    assert KEY not in str(err.value) and "[key]" in str(err.value)
    assert len(server.requested) == len(set(server.requested)) <= 3  # not retried; at most `concurrency` in flight


def test_model_is_required(tmp_path):
    with pytest.raises(ValueError, match="--model"):
        pt.main(["--out_dir", str(tmp_path), "--generator", "openai", "--mix", "synthetic=1", "--num_proc", "1"])


def test_unreachable_server_is_a_clear_error(tmp_path):
    server = ChatServer()
    url = server.url
    server.close()  # nothing listens there any more
    with pytest.raises(RuntimeError, match="failed 2 times"):
        pt.main(args(tmp_path / "out", url, "--retries", "1"))


def test_a_redirect_is_an_error_and_the_key_never_reaches_its_target(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    served = itertools.count()
    other_host = Server(lambda h: (200, {"Content-Type": "application/json"}, completion(section(next(served)))))
    api_base = Server(lambda h: (302, {"Location": other_host.url + h.path}, b""))
    try:
        # the control: urllib, which the client used to POST with, follows the 302 with a GET that
        # carries the key to the other host, and returns that host's answer to a body-less request
        req = urllib.request.Request(api_base.url + "/v1/chat/completions", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["choices"][0]["message"]["content"]
        assert other_host.seen == [("GET", f"Bearer {KEY}")]
        other_host.seen.clear()

        with pytest.raises(RuntimeError, match=r"^http://127.0.0.1:\d+/v1/chat/completions redirected \(HTTP 302\) to "
                                               r"http://127.0.0.1:\d+/v1/chat/completions: .*point --api_base at") as err:
            pt.main(args(tmp_path / "out", api_base.url + "/v1"))
    finally:
        other_host.close()
        api_base.close()
    assert other_host.seen == []  # nothing went to the other host, the key least of all
    assert api_base.seen and {method for method, _ in api_base.seen} == {"POST"}
    assert "\n" not in str(err.value) and KEY not in str(err.value)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_a_key_echoed_in_the_answers_is_scrubbed_before_the_cache(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = ChatServer(echo=True)
    try:
        pt.main(args(tmp_path / "out", server.url))
    finally:
        server.close()
    assert set(server.auth) == {f"Bearer {KEY}"}
    cache_text = (tmp_path / "out" / "openai_cache.jsonl").read_text()
    records = [json.loads(line) for line in cache_text.splitlines()]
    assert records and all(r["text"].endswith("You sent Bearer [key].") and r["finish_reason"] == "stop (Bearer [key])"
                           for r in records)
    docs = decoded_documents(tmp_path / "out")
    assert docs and all("You sent Bearer [key]." in d for d in docs)
    logs = capfd.readouterr()
    for where in [cache_text, (tmp_path / "out" / "meta.json").read_text(), logs.out, logs.err] + docs:
        assert KEY not in where


def test_a_placeholder_key_is_not_scrubbed_from_the_answers(tmp_path, monkeypatch):
    # local servers take any key, and "EMPTY" is the usual one: scrubbing it would rewrite the text
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")
    server = ChatServer(echo=True)
    try:
        pt.main(args(tmp_path / "out", server.url))
    finally:
        server.close()
    records = [json.loads(line) for line in (tmp_path / "out" / "openai_cache.jsonl").read_text().splitlines()]
    assert records and all(r["text"].endswith("You sent Bearer EMPTY.") for r in records)


@pytest.mark.parametrize("ctrl_c", ["once", "twice-to-the-process-group"])
def test_ctrl_c_stops_a_build_waiting_on_a_silent_server_at_once_and_keeps_the_cache(tmp_path, ctrl_c):
    server = ChatServer(name="A", stop_after=2, then="hang")  # answers two prompts, then nothing more
    out, group = tmp_path / "out", ctrl_c != "once"
    # a terminal's Ctrl-C reaches the whole process group, worker processes included
    argv = args(out, server.url, "--request_timeout", "600", *(["--num_proc", "2"] if group else []))
    proc = subprocess.Popen([sys.executable, SCRIPT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, OPENAI_API_KEY=KEY), start_new_session=True)
    cache_file = out / "openai_cache.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (len(server.requested) > 2 and cache_file.exists() and len(cache_file.read_bytes().splitlines()) == 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the build never reached the silent server"
            time.sleep(0.1)
        if group:
            os.killpg(proc.pid, signal.SIGINT)
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)  # generous: it takes well under a second
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C did not stop the build within 60 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        server.close()
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("prepare_textbooks.py: error: interrupted") and proc.returncode == 130
    assert stdout == ""
    cached = [json.loads(line) for line in cache_file.read_text().splitlines()]
    assert sorted(r["prompt"] for r in cached) == sorted(server.prompts) and len(cached) == 2

    second = ChatServer(name="B")  # the rerun continues from the cache
    try:
        pt.main(args(out, second.url))
    finally:
        second.close()
    assert not set(second.requested) & set(server.prompts)
    gen = json.loads((out / "meta.json").read_text())["sources"]["synthetic"]["generator"]
    assert gen["cached_at_start"] == 2 and gen["torn_cache_lines"] == 0


def test_ctrl_c_in_the_caller_cuts_off_the_requests_in_flight(tmp_path):
    first = og.prompt_text(*og.prompt_plan(1337)[0])

    class FirstOnly(ChatServer):  # answers the first prompt of the plan, and no other until it closes
        def answer(self, prompt):
            if prompt != first:
                self.released.wait()
            return super().answer(prompt)

    server = FirstOnly()
    cfg = og.OpenAIConfig(api_base=server.url, model="test-model", concurrency=3, timeout=600)
    texts = og.generate(cfg, 1337, str(tmp_path / "cache.jsonl"), {})
    closed = threading.Event()

    def ctrl_c_while_the_caller_is_elsewhere():
        try:
            try:
                raise KeyboardInterrupt
            finally:
                texts.close()  # as the caller's cleanup closes the generator while the Ctrl-C unwinds
        except KeyboardInterrupt:
            closed.set()

    try:
        assert next(texts) == server.answer(first)
        while len(server.requested) < 3:  # two more requests are in flight, and will never be answered
            time.sleep(0.05)
        t = threading.Thread(target=ctrl_c_while_the_caller_is_elsewhere, daemon=True)
        t.start()
        assert closed.wait(60), "closing the generator waited for the requests in flight"
    finally:
        server.close()
    assert [json.loads(line)["prompt"] for line in (tmp_path / "cache.jsonl").read_text().splitlines()] == [first]


@pytest.mark.parametrize("text", ["The same section, every time. " * 20, ""], ids=["same", "empty"])
def test_a_server_whose_answers_add_no_document_stops_the_build(tmp_path, text):
    n = pt.MAX_FRUITLESS_ANSWERS
    server = SameAnswerServer(text, stop_after=2 * n, then=400)  # the 400 ends a build that asks on
    try:
        with pytest.raises(RuntimeError, match=rf"the last {n} answers of http://127.0.0.1:\d+/v1 added no document "
                                               rf"\((exact_duplicate|empty) {n}\)") as err:
            pt.main(args(tmp_path / "out", server.url))
    finally:
        server.close()
    assert n < server.answered <= n + 20 and "\n" not in str(err.value)


@pytest.mark.parametrize("bad_line", [b'{"key": "abc", "text": "caf\xc3', b"[" * 100_000],
                         ids=["cut-inside-a-character", "nested-too-deep"])
def test_a_cache_line_that_cannot_be_read_counts_as_torn(tmp_path, bad_line):
    out = tmp_path / "out"
    out.mkdir()
    prompt = og.prompt_text(*og.prompt_plan(1337)[0])
    key = og.cache_key(og.request_body(og.OpenAIConfig(model="test-model"), prompt))
    good = {"key": key, "model": "test-model", "prompt": prompt, "text": "Cached. " + section(0), "finish_reason": "stop"}
    (out / "openai_cache.jsonl").write_bytes(json.dumps(good).encode() + b"\n" + bad_line)
    server = ChatServer()
    try:
        pt.main(args(out, server.url))
    finally:
        server.close()
    assert prompt not in server.requested
    gen = json.loads((out / "meta.json").read_text())["sources"]["synthetic"]["generator"]
    assert gen["cached_at_start"] == 1 and gen["torn_cache_lines"] == 1
    lines = (out / "openai_cache.jsonl").read_bytes().split(b"\n")
    assert lines[1] == bad_line and len([json.loads(line) for line in lines[2:] if line]) == len(server.prompts)


@pytest.mark.parametrize("api_base", ["not-a-url", "localhost:8000/v1", "ftp://localhost/v1", "http://",
                                      "http://localhost:port/v1", "http://127.0.0.1:99999/v1"])
def test_an_api_base_that_is_not_an_http_url_is_one_clear_error(tmp_path, api_base):
    with pytest.raises(ValueError, match=r"^--api_base .* is not an http:// or https:// URL with a host") as err:
        pt.main(args(tmp_path / "out", api_base))
    assert "\n" not in str(err.value)


def test_a_key_with_a_line_break_is_one_clear_error_that_does_not_show_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY + "\n")  # as `export OPENAI_API_KEY="$(cat key.txt; echo)"` leaves it
    server = ChatServer()
    try:
        with pytest.raises(ValueError, match=r"^\$OPENAI_API_KEY holds a line break") as err:
            pt.main(args(tmp_path / "out", server.url))
    finally:
        server.close()
    assert KEY not in str(err.value) and server.requested == []


def test_n_clients_ask_disjoint_prompts_with_caches_of_their_own_and_merge_to_the_one_client_corpus(tmp_path):
    server = ChatServer()
    try:
        pt.main(args(tmp_path / "one", server.url))
        asked = []
        for i in range(2):  # two clients, as two machines of a fleet would run them
            before = len(server.prompts)
            pt.main(args(tmp_path / "two", server.url, "--shard", f"{i}/2"))
            asked.append(server.prompts[before:])
        pt.main(args(tmp_path / "two", server.url, "--merge"))
    finally:
        server.close()
    plan = {og.prompt_text(*p): j for j, p in enumerate(og.prompt_plan(1337))}
    for i in range(2):  # client i asks the prompts of its units, 64 prompts of the plan each
        assert asked[i] and {plan[p] // 64 % 2 for p in asked[i]} == {i}
        cache = tmp_path / "two" / f"openai_cache.part-{i:05d}-of-00002.jsonl"
        assert sorted(json.loads(line)["prompt"] for line in cache.read_text().splitlines()) == sorted(asked[i])
    assert decoded_documents(tmp_path / "one") == decoded_documents(tmp_path / "two")
