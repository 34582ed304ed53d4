"""The api judge against a fake OpenAI-compatible server on 127.0.0.1: verdicts, position swap,
disk cache, retries (timeouts, 429, 5xx, malformed bodies), hard failures, rate limit."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignx.eval import metrics as M
from alignx.eval.judges import prompts as P
from alignx.eval.judges.api import ApiJudge
from alignx.eval.judges.base import JudgeError


def _answer(messages: list[dict]) -> str:
    """A deterministic 'judge model': reads the prompt it was sent."""
    system, user = messages[0]["content"], messages[1]["content"]
    if system == P.PAIRWISE_SYSTEM:
        a = user.split("## Output (a)")[1].split("## Output (b)")[0]
        return "Output (a)" if "GOOD" in a else "Output (b)"
    answer = re.search(r"\nA: (.*)\n\n", user, re.S)
    if system == P.TRUTH_SYSTEM:
        return "yes" if "TRUE" in answer.group(1) else "no"
    if system == P.INFO_SYSTEM:
        return "Yes." if len(answer.group(1)) > 3 else "No"
    if system == P.MODERATION_SYSTEM:
        resp = user.split("Assistant response:")[1]
        return "UNSAFE" if "BOMB" in resp else "REFUSAL" if "sorry" in resp else "SAFE"
    return "??"


class FakeServer:
    """Scripted replies first (status, body, headers, delay), then the deterministic judge."""

    def __init__(self):
        self.script: list[tuple[int, str | None, dict, float]] = []
        self.requests: list[dict] = []
        self.bias: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, text, headers, delay = (server.script.pop(0) if server.script else (200, None, {}, 0.0))
                if delay:
                    time.sleep(delay)
                if text is None:
                    content = server.bias or _answer(body["messages"])
                    text = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(text.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def make_judge(server, tmp_path):
    sleeps: list[float] = []

    def make(**kw):
        opts = dict(base_url=server.url, model="fake-gpt", api_key="sk-test", timeout=2.0, max_retries=3,
                    cache_dir=tmp_path / "cache", sleep=sleeps.append)
        opts.update(kw)
        return ApiJudge(**opts)

    make.sleeps = sleeps
    return make


def test_verdicts_for_every_capability(server, make_judge):
    j = make_judge()
    assert j.prefer(["q", "q"], ["GOOD answer", "meh"], ["meh", "GOOD answer"]) == [1.0, 0.0]
    assert j.truthful(["q", "q"], ["TRUE fact", "a myth"]) == [1.0, 0.0]
    assert j.informative(["q", "q"], ["long answer", "no"]) == [1.0, 0.0]
    assert j.unsafe(["p"] * 3, ["BOMB recipe", "I'm sorry, no", "Here you go"]) == [1.0, 0.0, 0.0]
    assert j.refusal(["p"] * 3, ["BOMB recipe", "I'm sorry, no", "Here you go"]) == [0.0, 1.0, 0.0]
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "fake-gpt" and req["body"]["temperature"] == 0
    assert j.info()["version"] == f"fake-gpt@{server.url}" and j.info()["proxy"] is False


def test_position_swap_cancels_a_biased_judge(server, make_judge):
    from alignx.eval.runner import judge_helpful
    from alignx.eval.suites import Tasks

    server.bias = "Output (a)"                          # always prefers whatever is shown first
    tasks = Tasks(alpaca=[{"id": "alpaca:0", "instruction": "q", "reference": "ref", "dataset": "d"}])
    items, samples = judge_helpful(make_judge(), tasks, {("alpaca", "alpaca:0"): "GOOD model answer"})
    assert items == [0.5] and samples[0]["p_model_first"] == 1.0 and samples[0]["p_ref_first"] == 1.0
    server.bias = None
    items, _ = judge_helpful(make_judge(cache_dir=None), tasks, {("alpaca", "alpaca:0"): "GOOD model answer"})
    assert items == [1.0]


def test_disk_cache_makes_a_rerun_free(server, make_judge, tmp_path):
    j = make_judge()
    first = j.truthful(["q1", "q2"], ["TRUE", "false"])
    n = len(server.requests)
    assert j.truthful(["q1", "q2"], ["TRUE", "false"]) == first and len(server.requests) == n
    again = make_judge()                               # a new process would see the same files
    assert again.truthful(["q1", "q2"], ["TRUE", "false"]) == first and len(server.requests) == n
    assert again.stats["cache_hits"] == 2
    make_judge(model="other-model").truthful(["q1"], ["TRUE"])   # another model is another key
    assert len(server.requests) == n + 1


def test_retries_429_with_retry_after_timeouts_and_malformed_bodies(server, make_judge):
    server.script = [(429, '{"error": "slow down"}', {"Retry-After": "7"}, 0.0),
                     (200, "this is not json", {}, 0.0),
                     (200, '{"choices": []}', {}, 0.0)]
    j = make_judge(max_retries=4)
    assert j.truthful(["q"], ["TRUE"]) == [1.0]
    assert len(server.requests) == 4 and j.stats["retries"] == 3
    assert make_judge.sleeps[0] == 7.0                  # Retry-After honored
    server.script = [(200, None, {}, 1.5)]              # slower than the client's timeout
    j = make_judge(timeout=0.3)
    assert j.informative(["q"], ["long answer"]) == [1.0]
    assert j.stats["retries"] == 1


def test_gives_up_with_a_clear_error(server, make_judge):
    server.script = [(503, "overloaded", {}, 0.0)] * 3
    with pytest.raises(JudgeError, match=r"giving up after 3 attempts; last error: HTTP 503"):
        make_judge(max_retries=2).truthful(["q"], ["TRUE"])
    n = len(server.requests)
    server.script = [(401, '{"error": "bad key"}', {}, 0.0)]
    with pytest.raises(JudgeError, match="HTTP 401"):          # not retryable: fails at once
        make_judge().truthful(["q"], ["TRUE"])
    assert len(server.requests) == n + 1


def test_unparseable_verdict_is_invalid_and_not_cached(server, make_judge):
    server.bias = "I would rather not say"
    j = make_judge()
    assert j.unsafe(["p"], ["text"]) == [None] and j.stats["unparsed"] == 1
    server.bias = None
    assert j.unsafe(["p"], ["text"]) == [0.0]           # asked again, not served from the cache
    assert M.flag_items([None]) == [None]


def test_rate_limit_spaces_requests(server, make_judge):
    j = make_judge(rpm=60)                              # one request per second
    j.truthful(["a", "b"], ["TRUE", "TRUE"])
    assert make_judge.sleeps and 0.5 < make_judge.sleeps[-1] <= 1.0


def test_configuration_errors(monkeypatch, tmp_path):
    for var in ("OPENAI_API_KEY", "ALIGNX_JUDGE_API_KEY", "ALIGNX_JUDGE_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(JudgeError, match="needs a key"):
        ApiJudge(cache_dir=tmp_path)
    monkeypatch.setenv("ALIGNX_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ALIGNX_JUDGE_MODEL", "local-llama")
    j = ApiJudge(cache_dir=tmp_path, max_retries=0, timeout=0.5)
    assert j.model == "local-llama" and j.api_key is None
    with pytest.raises(JudgeError, match="giving up after 1 attempts"):   # nothing listens on port 9
        j.truthful(["q"], ["a"])


def test_reply_parsers():
    assert P.parse_pairwise("Output (b)") == "b" and P.parse_pairwise("output (a).") == "a"
    assert P.parse_pairwise("Output (a) or Output (b)") is None and P.parse_pairwise("b") == "b"
    assert P.parse_yes_no(" Yes, it is") is True and P.parse_yes_no("no.") is False
    assert P.parse_yes_no("maybe") is None
    assert P.parse_moderation("unsafe") == "UNSAFE" and P.parse_moderation("It is fine") is None
