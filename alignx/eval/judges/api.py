"""The ``api`` judge: any OpenAI-compatible chat-completions endpoint (GPT-4 as in the papers, or a
local vLLM / Ollama server), stdlib only.

* configuration: arguments, else $ALIGNX_JUDGE_BASE_URL / $OPENAI_BASE_URL, $ALIGNX_JUDGE_MODEL,
  $ALIGNX_JUDGE_API_KEY / $OPENAI_API_KEY;
* retries with exponential backoff on timeouts, connection errors, 429 and 5xx (Retry-After is
  honored) and on malformed response bodies; other 4xx fail at once with the server's message;
* a client-side rate limit (requests per minute);
* a disk cache keyed by a hash of (base URL, model, messages, decoding parameters): a rerun costs
  nothing. Replies whose verdict cannot be parsed are returned as ``None`` and not cached.
"""
from __future__ import annotations

from alignx.errors import InvalidInput

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from alignx.atomic import write_json
from alignx.eval.judges import prompts as P
from alignx.eval.judges.base import Judge, JudgeError, Prob, check_lengths

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _default_cache() -> Path:
    from alignx.models import cache_dir

    return cache_dir() / "judge_api"


class ApiJudge(Judge):
    name = "api"
    capabilities = frozenset({"prefer", "unsafe", "refusal", "truthful", "informative"})

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5, rpm: float | None = None,
                 cache_dir: str | os.PathLike | None = None, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_tokens: int = 16, sleep: Callable[[float], None] = time.sleep):
        self.base_url = (base_url or os.environ.get("ALIGNX_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
                         or "https://api.openai.com/v1").rstrip("/")
        self.model = model or os.environ.get("ALIGNX_JUDGE_MODEL") or "gpt-4"
        self.api_key = api_key or os.environ.get("ALIGNX_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if "api.openai.com" in self.base_url and not self.api_key:
            raise JudgeError("the api judge needs a key for api.openai.com: set OPENAI_API_KEY or "
                             "--api-key (or point --api-base-url at a local server)")
        if timeout <= 0 or max_retries < 0:
            raise InvalidInput("timeout must be > 0 and max_retries >= 0")
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.min_interval = 60.0 / rpm if rpm else 0.0
        self.max_tokens = max_tokens
        self.cache_dir = Path(cache_dir) if cache_dir else _default_cache()
        self.sleep = sleep
        self._last_request = 0.0
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "unparsed": 0}

    def info(self) -> dict:
        return {"name": self.name, "version": f"{self.model}@{self.base_url}", "proxy": False,
                "model": self.model, "base_url": self.base_url, "prompts": P.VERSION,
                "capabilities": sorted(self.capabilities), "cache_dir": str(self.cache_dir), "stats": dict(self.stats)}

    # --- transport -----------------------------------------------------------------------------
    def _payload(self, messages: list[dict]) -> dict:
        return {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}

    def _cache_path(self, payload: dict) -> Path:
        key = hashlib.sha256(json.dumps({"base_url": self.base_url, **payload}, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _throttle(self) -> None:
        if self.min_interval:
            wait = self._last_request + self.min_interval - time.monotonic()
            if wait > 0:
                self.sleep(wait)
        self._last_request = time.monotonic()

    def _post(self, payload: dict) -> str:
        """One completion's text, retrying what can be retried; JudgeError otherwise."""
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = json.dumps(payload).encode()
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self._throttle()
            self.stats["requests"] += 1
            delay = min(self.max_backoff, self.backoff * 2 ** attempt)
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code not in RETRY_STATUS:
                    raise JudgeError(f"{url} answered HTTP {exc.code}: {detail}") from None
                last_error = f"HTTP {exc.code}: {detail}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after:
                    try:
                        delay = min(self.max_backoff, max(delay, float(retry_after)))
                    except ValueError:
                        pass
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            else:
                try:
                    content = json.loads(raw)["choices"][0]["message"]["content"]
                    if not isinstance(content, str):
                        raise TypeError("content is not a string")
                    return content
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    last_error = f"malformed reply ({type(exc).__name__}): {raw[:200]!r}"
            if attempt < self.max_retries:
                self.sleep(delay)
        raise JudgeError(f"{url}: giving up after {self.max_retries + 1} attempts; last error: {last_error}")

    def complete(self, messages: list[dict], parse: Callable[[str], object]):
        """Parsed verdict of one request, from the disk cache when possible; None if unparseable."""
        payload = self._payload(messages)
        path = self._cache_path(payload)
        if path.exists():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))
                verdict = parse(cached["content"])
                if verdict is not None:
                    self.stats["cache_hits"] += 1
                    return verdict
            except (ValueError, KeyError):
                pass                                   # a damaged cache entry is simply asked again
        content = self._post(payload)
        verdict = parse(content)
        if verdict is None:
            self.stats["unparsed"] += 1
            return None
        write_json(path, {"request": payload, "content": content}, indent=None, default=None, newline=False)
        return verdict

    # --- capabilities ----------------------------------------------------------------------------
    def prefer(self, instructions, first, second) -> list[Prob]:
        check_lengths(instructions, first, second)
        out: list[Prob] = []
        for x, a, b in zip(instructions, first, second):
            v = self.complete(P.pairwise_messages(x, a, b), P.parse_pairwise)
            out.append(None if v is None else (1.0 if v == "a" else 0.0))
        return out

    def _moderate(self, prompts, responses) -> list[str | None]:
        check_lengths(prompts, responses)
        return [self.complete(P.moderation_messages(p, r), P.parse_moderation) for p, r in zip(prompts, responses)]

    def unsafe(self, prompts, responses) -> list[Prob]:
        return [None if v is None else float(v == "UNSAFE") for v in self._moderate(prompts, responses)]

    def refusal(self, prompts, responses) -> list[Prob]:
        return [None if v is None else float(v == "REFUSAL") for v in self._moderate(prompts, responses)]

    def _yes_no(self, build, questions, answers) -> list[Prob]:
        check_lengths(questions, answers)
        out: list[Prob] = []
        for q, a in zip(questions, answers):
            v = self.complete(build(q, a), P.parse_yes_no)
            out.append(None if v is None else float(v))
        return out

    def truthful(self, questions, answers, references=None) -> list[Prob]:
        return self._yes_no(P.truth_messages, questions, answers)

    def informative(self, questions, answers) -> list[Prob]:
        return self._yes_no(P.info_messages, questions, answers)

