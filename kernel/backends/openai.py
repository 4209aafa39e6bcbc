"""The remote backend: the kernel's model on an OpenAI-compatible server (llama-server,
llama_cpp.server, vLLM, Ollama): streamed ``POST /completions`` of the raw ChatML prompt over
``http.client`` (no proxies). No scoring: the kernel lets the model write ``CALL`` / ``ANSWER:``.
A JSON schema goes as a GBNF ``grammar`` (both llama.cpp servers take it), else as llama-server's
``json_schema`` (never both: older llama-servers refuse); vLLM and Ollama ignore both. Another
machine's `llmos serve` (its models are ``owned_by: llmos``) takes ``json_schema`` only. Tokens are
counted as streamed chunks; ``tokenize()`` asks ``/tokenize`` or ``/extras/tokenize`` if the server
has one, else estimates 1 token per 4 characters (pseudo ids: only the count means something).

One stream at a time holds a live response, as the local backend holds one context: a paused
stream lets go of its response when another sends a request, and when read again asks for
``prompt + text so far`` with the tokens left. So does a stream cut short after some text, by
``[DONE]`` without a finish reason (llama_cpp.server, on a concurrent request) or a dropped line.
A schema-constrained stream cannot resume (its grammar would start over): it keeps its response.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..syscalls.grammar import GrammarError, to_gbnf
from ..devices import one_line
from .base import BackendError, SamplingParams, StreamStats, SwitchInfo

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 8192
PROBE_TIMEOUT_S = 10.0  # for /models, /props and /tokenize
CHARS_PER_TOKEN = 4  # the estimate when the server cannot tokenize
END_OF_TURN = "<|im_end|>"
DONE = "[DONE]"
TOKENIZE_ROUTES = (("/tokenize", "content"), ("/extras/tokenize", "input"))  # llama-server, llama_cpp.server
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class OpenAIOptions:
    base_url: str
    api_key: str = ""
    model: str = ""
    timeout_s: float = 60.0




def _cause(exc: BaseException) -> str:
    """A network failure in a few words: "connection refused", "timed out", ..."""
    text = one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__, 200)
    return text[:1].lower() + text[1:]


def _schema_fields(schema: dict[str, Any], *, grammar: bool = True) -> dict[str, Any]:
    """How to ask the server for output that follows ``schema``."""
    if not grammar:
        return {"json_schema": schema}
    try:
        return {"grammar": to_gbnf(schema)}
    except GrammarError as exc:  # a schema the converter does not handle, or llama.cpp would refuse
        log.info("sending json_schema instead of a grammar (%s)", one_line(str(exc), 200))
        return {"json_schema": schema}


class OpenAIBackend:
    name = "openai"
    supports_scoring = False

    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self.base_url = options.base_url.rstrip("/")
        self.root = self.base_url.removesuffix("/v1")
        self.model_id = options.model
        self.model = f"{self.base_url} {options.model}".strip()
        self.n_ctx = DEFAULT_N_CTX
        self.on_switch: Callable[[SwitchInfo], None] | None = None  # the server switches, unseen
        self._live: list[OpenAIStream] = []  # the streams that hold a live response
        self._tokenize_routes = TOKENIZE_ROUTES  # the ones not yet known not to work
        self._takes_grammar = True  # llmos serve takes json_schema, not GBNF

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None,
                 timeout: float | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The connection and its 200 response; anything else raises BackendError."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"not an http(s) URL for the OpenAI-compatible server: {self.base_url!r}")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.hostname, parts.port, timeout=timeout or self.options.timeout_s)
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.options.api_key:
            headers["Authorization"] = f"Bearer {self.options.api_key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), data, headers)
            resp = conn.getresponse()
            if resp.status != 200:
                detail = one_line(resp.read(4000).decode("utf-8", "replace"), 200)
                conn.close()
                raise BackendError(f"the server at {url} answered HTTP {resp.status} {resp.reason}"
                                   + (f": {detail}" if detail else ""))
        except _NETWORK_ERRORS as exc:
            conn.close()
            raise BackendError(f"cannot reach the OpenAI-compatible server at {self.base_url}: {_cause(exc)}") from None
        return conn, resp

    def _json(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        conn, resp = self._request(method, url, body, timeout=min(PROBE_TIMEOUT_S, self.options.timeout_s))
        raw = b""
        try:
            raw = resp.read()
            return json.loads(raw)
        except _NETWORK_ERRORS as exc:
            raise BackendError(f"cannot read the answer of {url}: {_cause(exc)}") from None
        except ValueError:
            text = one_line(raw.decode("utf-8", "replace"), 80)
            raise BackendError(f"the server at {url} did not answer JSON: {text!r}") from None
        finally:
            conn.close()

    def load(self) -> None:
        url = f"{self.base_url}/models"
        data = self._json("GET", url)
        listed = data.get("data") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise BackendError(f"the server at {url} did not answer an OpenAI model list")
        models = {m["id"]: m for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)}
        if not self.model_id:
            if not models:
                raise BackendError(f"the server at {url} lists no models")
            self.model_id = next(iter(models))
        elif models and self.model_id not in models:
            log.warning("the server lists %s, not %r; asking for it anyway", ", ".join(models), self.model_id)
        self.model = f"{self.base_url} {self.model_id}"
        self._takes_grammar = models.get(self.model_id, {}).get("owned_by") != "llmos"
        self.n_ctx = self._context_size(models.get(self.model_id, {}))
        log.info("remote model %s, context %d tokens", self.model, self.n_ctx)

    def _context_size(self, entry: dict[str, Any]) -> int:
        """vLLM lists ``max_model_len``; llama-server tells its context in ``/props``."""
        n_ctx = entry.get("max_model_len")
        try:
            n_ctx = n_ctx or self._json("GET", f"{self.root}/props")["default_generation_settings"]["n_ctx"]
        except (BackendError, LookupError, TypeError) as exc:
            log.debug("the server does not tell its context size (%s)", exc)
            return DEFAULT_N_CTX
        return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else DEFAULT_N_CTX

    def close(self) -> None:
        for stream in list(self._live):
            stream.close()

    def release(self, pid: int) -> None:
        pass  # nothing is kept per process: the server manages its own cache

    def tokenize(self, text: str) -> list[int]:
        for path, key in self._tokenize_routes:  # each tried until it fails; one that works is kept
            try:
                tokens = self._json("POST", f"{self.root}{path}", {key: text})["tokens"]
                if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
                    self._tokenize_routes = ((path, key),)
                    return tokens
            except (BackendError, LookupError, TypeError) as exc:
                log.debug("no tokenizer at %s: %s", path, exc)
            self._tokenize_routes = tuple(r for r in self._tokenize_routes if r[0] != path)
        return [zlib.crc32(text[i:i + CHARS_PER_TOKEN].encode()) & 0xFFFF
                for i in range(0, len(text), CHARS_PER_TOKEN)]

    def open(self, pid: int, prompt: str, params: SamplingParams,
             json_schema: dict[str, Any] | None = None) -> "OpenAIStream":
        body: dict[str, Any] = {
            "prompt": prompt, "stream": True, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p,
            "stop": list(dict.fromkeys((*params.stop, END_OF_TURN))), "seed": params.seed,
        }
        if self.model_id:
            body["model"] = self.model_id
        if json_schema is not None:
            body.update(_schema_fields(json_schema, grammar=self._takes_grammar))
        return OpenAIStream(self, pid, body, params)

    def score(self, pid: int, prompt: str, continuations: list[str]) -> list[float]:
        raise NotImplementedError("the OpenAI-compatible backend cannot score (supports_scoring is False)")

    def _claim(self, stream: "OpenAIStream") -> None:
        """``stream`` sends a request: paused streams let go of their responses if they can resume."""
        for other in [s for s in self._live if s is not stream and s.resumable]:
            other.close()
        if stream not in self._live:
            self._live.append(stream)


class OpenAIStream:
    """One generation, over one or more requests (see the module docstring)."""

    def __init__(self, backend: OpenAIBackend, pid: int, body: dict[str, Any], params: SamplingParams) -> None:
        self.backend = backend
        self.pid = pid
        self.params = params
        self.stats = StreamStats()
        self.text = ""  # everything generated so far
        self._body = body
        self._url = f"{backend.base_url}/completions"
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._fresh = 0  # text chunks read from the current response
        self.resumable = "grammar" not in body and "json_schema" not in body  # a grammar restarts

    @property
    def finished(self) -> bool:
        return self.stats.finish_reason is not None

    def next(self, max_tokens: int) -> list[str]:
        pieces: list[str] = []
        while not self.finished and len(pieces) < max_tokens:
            if self._resp is None:
                if self.stats.generated_tokens >= self.params.max_tokens:
                    self._finish("length")
                    break
                self._connect()
            event = self._read_event()
            if isinstance(event, str):  # the response ended without a finish reason
                self.close()
                if self._fresh and not self.resumable:
                    raise BackendError(f"the constrained stream from {self._url} was cut short ({event})")
                if self._fresh:  # cut short: ask for the rest
                    log.info("pid %d: the stream ended early (%s); asking for the rest", self.pid, event)
                elif event == DONE:  # nothing more to say
                    self._finish("stop")
                else:
                    raise BackendError(f"lost the stream from {self._url}: {event}")
                continue
            choices = event.get("choices")
            choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
            text = choice.get("text")
            if isinstance(text, str) and text:
                self.stats.first_token_at = self.stats.first_token_at or time.monotonic()
                self.stats.generated_tokens += 1
                self._fresh += 1
                self.text += text
                pieces.append(text)
            if choice.get("finish_reason"):
                self._finish("length" if choice["finish_reason"] == "length" else "stop")
        return pieces

    def _connect(self) -> None:
        body = dict(self._body, prompt=self._body["prompt"] + self.text,
                    max_tokens=self.params.max_tokens - self.stats.generated_tokens)
        self.backend._claim(self)
        self._conn, self._resp = self.backend._request("POST", self._url, body)
        self._fresh = 0
        kind = self._resp.getheader("Content-Type") or ""
        if "text/event-stream" not in kind:
            self.close()
            raise BackendError(f"the server at {self._url} did not stream its answer (Content-Type {kind!r})")

    def _read_event(self) -> dict[str, Any] | str:
        """The next ``data:`` event of the stream; at its end, ``DONE`` or why it broke off."""
        assert self._resp is not None
        while True:
            try:
                raw = self._resp.readline(1 << 20)
            except TimeoutError:
                raise BackendError(f"{self._url} sent nothing for {self.backend.options.timeout_s:g} s") from None
            except _NETWORK_ERRORS as exc:
                return _cause(exc)
            if not raw:
                return "the server closed the stream"
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue  # blank separators, ": ping" comments, event: and id: fields
            data = line[5:].strip()
            if data == DONE:
                return DONE
            try:
                event = json.loads(data)
            except ValueError:
                event = data
            if not isinstance(event, dict):
                raise BackendError(f"the server at {self._url} streamed a non-object: {one_line(data, 80)!r}")
            if "error" in event:
                raise BackendError(f"the server at {self._url} failed mid-stream: {one_line(data, 200)}")
            return event

    def _finish(self, reason: str) -> None:
        self.stats.finish_reason = reason
        self.close()

    def close(self) -> None:
        """Let go of the current response (the server stops generating for it)."""
        for part in (self._resp, self._conn):
            if part is not None:
                part.close()
        self._resp = self._conn = None
        if self in self.backend._live:
            self.backend._live.remove(self)
