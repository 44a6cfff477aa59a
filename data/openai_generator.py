"""
Synthetic textbooks from a language model, as phi-1.5's were made: prompts to any OpenAI-compatible
chat endpoint (a local vLLM, llama.cpp or Ollama server, or a hosted API), POST {api_base}/chat/completions.

Each prompt crosses a seed topic with an audience and a style (textbook_generator's tables, so both
generators draw from the same topics). Prompts go out in a fixed, seeded order; requests run on
threads, retried with exponential backoff on 429, 5xx and network errors. Every answer is
appended to a JSONL cache as soon as it arrives, keyed by a hash of (model, messages, max_tokens,
temperature): an interrupted run continues where it stopped and never pays twice for a prompt.

The API key is read from an environment variable and sent only in the Authorization header, only to
api_base itself: a redirect is an error, never followed. It is never written to the cache, meta.json
or any message, and is scrubbed from whatever the server sends back.
"""

import hashlib
import http.client
import json
import math
import os
import queue
import random
import socket
import sys
import threading
import urllib.parse
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

try:
    from data import textbook_generator
except ImportError:  # run from inside data/
    import textbook_generator

STYLE_INSTRUCTIONS = {
    "textbook": "Use headings, precise definitions and a formal tone.",
    "lecture notes": "Write concise lecture notes with bullet points.",
    "tutorial": "Write a friendly step-by-step tutorial.",
    "dialogue": "Write it as a conversation between a teacher and a student.",
    "story": "Tell it as a short story in which the characters meet the ideas and solve the problems.",
}


@dataclass
class OpenAIConfig:
    api_base: str = "http://localhost:8000/v1"
    model: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_tokens: int = 1500
    temperature: float = 0.8
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    timeout: float = 300.0



# The flags of a command that asks a server (prepare_textbooks.py --generator openai, quality.py label)

def add_arguments(g, max_tokens: int, temperature: float, model_required: bool = False) -> None:
    """Add the flags of an OpenAIConfig to the argparse parser or group g, with these defaults."""
    g.add_argument("--api_base", default=OpenAIConfig.api_base, help="OpenAI-compatible base URL")
    g.add_argument("--model", required=model_required, default=None, help="model name to ask the server for")
    g.add_argument("--api_key_env", default=OpenAIConfig.api_key_env,
                   help="environment variable that holds the API key (never logged)")
    g.add_argument("--concurrency", type=int, default=OpenAIConfig.concurrency, help="requests in flight")
    g.add_argument("--max_tokens", type=int, default=max_tokens, help="max_tokens of each answer")
    g.add_argument("--temperature", type=float, default=temperature)
    g.add_argument("--retries", type=int, default=OpenAIConfig.retries, help="retries of a failed request (429, 5xx, network)")
    g.add_argument("--backoff", type=float, default=OpenAIConfig.backoff, help="seconds before the first retry; doubles each time")
    g.add_argument("--request_timeout", type=float, default=OpenAIConfig.timeout)


def check_arguments(args, error) -> None:
    """Refuse out-of-range flags of add_arguments with error(message), the parser's p.error (nan
    passes every < and > check, so finiteness is checked too)."""
    if args.concurrency < 1 or args.retries < 0 or args.backoff < 0 or args.max_tokens < 1:
        error("--concurrency and --max_tokens must be at least 1, --retries and --backoff at least 0")
    if not (math.isfinite(args.backoff) and math.isfinite(args.temperature) and args.temperature >= 0
            and 0 < args.request_timeout < math.inf):
        error("--backoff, --temperature and --request_timeout must be finite, --temperature at least 0 "
              "and --request_timeout above 0")


def config_from_args(args) -> OpenAIConfig:
    return OpenAIConfig(api_base=args.api_base, model=args.model, api_key_env=args.api_key_env,
                        concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature,
                        retries=args.retries, backoff=args.backoff, timeout=args.request_timeout)

def prompt_plan(seed: int) -> list:
    """(topic, audience, style) for every prompt, in the order they are sent: the full cross
    product, shuffled by the seed."""
    plan = [(topic, a.name, style) for topic in textbook_generator.seed_topics()
            for a in textbook_generator.AUDIENCES for style in textbook_generator.STYLES]
    random.Random(seed).shuffle(plan)
    return plan


def prompt_text(topic: str, audience: str, style: str) -> str:
    concept = topic.split(", at ")[0]
    area = next((t.area for t in textbook_generator.TOPICS if t.title == concept), "")
    code = " Include Python functions with docstrings and doctest examples." if area == "programming" else ""
    return (f"Write a {style} section about \"{topic}\" for {audience}. Begin with a clear explanation of "
            f"the key ideas, then give worked examples that show every step, then exercises followed by "
            f"their answers. {STYLE_INSTRUCTIONS[style]}{code} Write only the section itself, with no "
            f"preamble and no mention of these instructions.")


def request_body(cfg: OpenAIConfig, prompt: str) -> dict:
    return {"model": cfg.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": cfg.max_tokens, "temperature": cfg.temperature}


def cache_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Cache:
    """Answers on disk, one JSON object per line, appended (and flushed to disk) as they arrive.
    A line cut short by a crash, even inside a character, is ignored on the next load, as is any
    line that does not hold an answer. Answers are also looked up in the caches `read_also` (those
    of the other parts of a build), which are only read."""

    def __init__(self, path: str, read_also: tuple = ()):
        self.path, self.answers, self.torn, self.closed = path, {}, 0, False
        self.lock = threading.Lock()
        for other in read_also:
            self.load(other)
        self.torn = 0  # counted in this cache only: the others may be written to as they are read
        self.load(path)

    def load(self, path: str) -> None:
        if os.path.exists(path):
            with open(path, "rb") as f:  # bytes: a line cut inside a character must not stop the load
                for line in f:
                    try:
                        rec = json.loads(line.decode("utf-8"))
                        if not isinstance(rec["text"], str):
                            raise TypeError("no text")
                        self.answers[rec["key"]] = rec
                    # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting is a RecursionError
                    except (ValueError, KeyError, TypeError, RecursionError):
                        self.torn += 1

    def put(self, rec: dict) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self.lock:
            if self.closed:
                return
            with open(self.path, "a", encoding="utf-8") as f:
                if f.tell() and self.torn:  # start on a fresh line after a torn one
                    f.write("\n")
                    self.torn = 0
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.answers[rec["key"]] = rec

    def close(self) -> None:
        """Write nothing more; returns once a line being written is complete, so that a process
        that exits next leaves no line cut short."""
        with self.lock:
            self.closed = True


class Stopped(Exception):
    """Client.stop() was called while a request was in flight."""


class GaveUp(RuntimeError):
    """A request still failed (5xx, 429, a network error, a malformed answer) after every retry."""


MIN_SECRET_KEY = 8  # characters: shorter keys are not scrubbed from the answers (see Client.scrub)


class Client:
    def __init__(self, cfg: OpenAIConfig, log=None):
        if not cfg.model:
            raise ValueError("--generator openai needs --model (the model name the server serves)")
        base = urllib.parse.urlsplit(cfg.api_base)
        try:
            base.port  # a port that is not a number in 0-65535 raises here
        except ValueError:
            base = None
        if base is None or base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError(f"--api_base {cfg.api_base!r} is not an http:// or https:// URL with a host "
                             f"(for example http://localhost:8000/v1)")
        self.cfg = cfg
        self.url = cfg.api_base.rstrip("/") + "/chat/completions"
        # http.client, not urllib: urllib follows redirects, and sent the key with the GET it turned
        # the POST into, to whatever host the server named. http.client follows none.
        self.connection = http.client.HTTPSConnection if base.scheme == "https" else http.client.HTTPConnection
        self.host, self.port = base.hostname, base.port
        self.path = base.path.rstrip("/") + "/chat/completions" + (f"?{base.query}" if base.query else "")
        self.key = os.environ.get(cfg.api_key_env) or None
        if self.key and ("\n" in self.key or "\r" in self.key):  # http.client's error would show the key
            raise ValueError(f"${cfg.api_key_env} holds a line break, which cannot go in an HTTP header; "
                             f"set it to the key alone")
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.requests = self.retried = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.open = set()  # connections waiting for an answer, for stop() to cut off

    def scrub(self, text: str) -> str:
        # a key of a few characters is a placeholder (vLLM's "EMPTY"), not a secret: replacing it
        # everywhere would rewrite ordinary words of the answers
        return text.replace(self.key, "[key]") if self.key and len(self.key) >= MIN_SECRET_KEY else text

    def stop(self) -> None:
        """Make every request end now: retries' sleeps wake up and answers being waited for are cut
        off, so that no thread is left blocked for up to --request_timeout."""
        with self.lock:
            self.stopping.set()
            for conn in self.open:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def post(self, data: bytes, headers: dict) -> tuple:
        """One POST to api_base: (status, reason, response headers, body)."""
        conn = self.connection(self.host, self.port, timeout=self.cfg.timeout)
        try:
            conn.connect()
            with self.lock:  # under the lock, so that stop() either sees this connection or came first
                if self.stopping.is_set():
                    raise Stopped()
                self.open.add(conn)
            conn.request("POST", self.path, data, headers)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.headers, resp.read()
        finally:
            with self.lock:
                self.open.discard(conn)
            conn.close()

    def complete(self, body: dict) -> dict:
        """POST one chat completion, retrying transient failures. Returns the answer's text and
        finish_reason, with the key scrubbed from both: a server that echoes the request's headers
        must not put the key into the cache or the corpus."""
        headers = {"Content-Type": "application/json", "User-Agent": "nanophi"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        delay = self.cfg.backoff
        for attempt in range(self.cfg.retries + 1):
            if self.stopping.is_set():
                raise Stopped()
            with self.lock:
                self.requests += 1
            try:
                status, reason, reply_headers, raw = self.post(data, headers)
            except (OSError, http.client.HTTPException) as e:
                why = self.scrub(str(e) or type(e).__name__)
            else:
                if 300 <= status < 400:
                    raise RuntimeError(self.scrub(
                        f"{self.url} redirected (HTTP {status}) to {reply_headers.get('Location', '?')}: the API key "
                        f"is only ever sent to --api_base itself, so point --api_base at the final address"))
                if status == 429 or status >= 500:
                    why = self.scrub(f"HTTP {status} {reason}")
                    retry_after = reply_headers.get("Retry-After")
                    if retry_after and retry_after.replace(".", "", 1).isdigit():
                        delay = max(delay, min(float(retry_after), 60.0))
                elif not 200 <= status < 300:  # our request is wrong: retrying will not help
                    detail = raw[:300].decode("utf-8", "replace").strip()
                    raise RuntimeError(self.scrub(f"{self.url} answered HTTP {status} {reason}: {detail}"))
                else:
                    try:
                        choice = json.loads(raw.decode("utf-8"))["choices"][0]
                        text, finish = choice["message"]["content"], choice.get("finish_reason")
                        if not isinstance(text, str):
                            raise ValueError("the answer has no text content")
                        return {"text": self.scrub(text),
                                "finish_reason": self.scrub(finish) if isinstance(finish, str) else None}
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as e:
                        why = f"malformed answer ({self.scrub(str(e))})"
            if self.stopping.is_set():
                raise Stopped()
            if attempt == self.cfg.retries:
                raise GaveUp(f"{self.url} failed {self.cfg.retries + 1} times, last with {why}; "
                             f"finished answers are cached, so rerunning continues from here")
            with self.lock:
                self.retried += 1
            self.log(f"openai: {why}; retrying in {delay:.1f}s ({attempt + 1}/{self.cfg.retries})")
            if self.stopping.wait(delay * (1 + 0.1 * random.random())):
                raise Stopped()
            delay = min(2 * delay, 60.0)


def interrupted(e: Optional[BaseException]) -> bool:
    """Whether a Ctrl-C is behind e: e itself, or an exception that e was raised while handling
    (a generator closed by a caller that is unwinding from a KeyboardInterrupt)."""
    for _ in range(20):  # a context chain is short; the bound keeps a pathological one finite
        if e is None:
            return False
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__context__
    return False


def answers(cfg: OpenAIConfig, prompts: Iterable[str], cache_path: str, stats: dict, log=None,
            skip_failed: bool = False, read_also: tuple = ()) -> Iterator[dict]:
    """The answer record of each prompt ({"key", "model", "prompt", "text", "finish_reason"}), in
    prompt order, for as long as the caller pulls. Up to cfg.concurrency requests run ahead of the
    caller; every answer is cached as it arrives, and a prompt already in the cache is not sent.
    When the caller stops, the requests in flight finish (and are cached), unless a Ctrl-C stopped
    it: then they are cut off at once. With skip_failed, a prompt whose request still failed after
    cfg.retries retries gives {"key", "prompt", "error"} (not cached, so a rerun asks again)
    instead of stopping everything; a request the server rejects (4xx, a redirect) always stops.
    Answers are also looked up in the caches read_also (see Cache)."""
    client = Client(cfg, log)
    cache = Cache(cache_path, read_also)
    stats.update(cached_at_start=len(cache.answers), torn_cache_lines=cache.torn, requests=0, retries=0,
                 answers_new=0, answers_from_cache=0, truncated=0, empty=0, failed=0, model=cfg.model,
                 api_base=cfg.api_base)

    def fetch(body: dict, key: str) -> dict:
        try:
            answer = client.complete(body)
        except GaveUp as e:
            if not skip_failed:
                raise
            return {"key": key, "prompt": body["messages"][0]["content"], "error": str(e)}
        rec = {"key": key, "model": cfg.model, "prompt": body["messages"][0]["content"], **answer}
        cache.put(rec)
        return rec

    # Daemon threads rather than a ThreadPoolExecutor, whose workers are joined at exit: one stuck in
    # a connect() or a DNS lookup, which nothing can interrupt, would hold up Ctrl-C for minutes.
    work = queue.SimpleQueue()

    def worker():
        while (job := work.get()) is not None:
            fut, body, key = job
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fetch(body, key))
                except BaseException as e:
                    fut.set_exception(e)

    def submit(body: dict, key: str) -> Future:
        fut = Future()
        work.put((fut, body, key))
        return fut

    def settle(rec: Optional[dict], fut: Optional[Future]) -> dict:
        if fut is not None:
            rec = fut.result()
            stats["failed" if "error" in rec else "answers_new"] += 1
        else:
            stats["answers_from_cache"] += 1
        stats["requests"], stats["retries"] = client.requests, client.retried
        if rec.get("finish_reason") == "length":
            stats["truncated"] += 1
        if "text" in rec and not rec["text"].strip():
            stats["empty"] += 1
        return rec

    workers = max(1, cfg.concurrency)
    for _ in range(workers):
        threading.Thread(target=worker, daemon=True).start()
    pending = []  # (cached record or None, future or None), in prompt order
    try:
        for prompt in prompts:
            body = request_body(cfg, prompt)
            key = cache_key(body)
            rec = cache.answers.get(key)
            pending.append((rec, None if rec else submit(body, key)))
            # keep at most `concurrency` requests in flight ahead of the caller
            while pending and (pending[0][0] is not None or sum(f is not None for _, f in pending) >= cfg.concurrency):
                yield settle(*pending.pop(0))  # an empty one too: the caller counts what adds no document
        while pending:
            yield settle(*pending.pop(0))
    except BaseException as e:
        # The caller stopped (or failed): drop what has not started. A Ctrl-C, here or in the caller
        # (which then closes this generator as it unwinds), must stop at once; otherwise the requests
        # in flight finish, so that what they cost is cached.
        if not interrupted(e):
            wait([fut for _, fut in pending if fut is not None and not fut.cancel()])  # cancel() fails once started
        raise
    finally:
        for _, fut in pending:
            if fut is not None:
                fut.cancel()
        client.stop()
        cache.close()
        for _ in range(workers):
            work.put(None)
        stats["requests"], stats["retries"] = client.requests, client.retried


def generate(cfg: OpenAIConfig, seed: int, cache_path: str, stats: dict, log=None,
             indices: Optional[list] = None, read_also: tuple = ()) -> Iterator[str]:
    """The textbook sections' texts, one for each prompt of prompt_plan(seed) numbered `indices` (all
    of them if None), in that order (see answers: concurrency, the cache, stopping)."""
    plan = prompt_plan(seed)
    order = range(len(plan)) if indices is None else indices
    records = answers(cfg, (prompt_text(*plan[i]) for i in order), cache_path, stats, log, read_also=read_also)
    try:
        for rec in records:
            yield rec["text"]
    finally:
        records.close()  # at once, so that a Ctrl-C behind this close is seen there (see interrupted)
