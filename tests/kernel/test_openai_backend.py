"""The remote backend (kernel/backends/openai.py).

Fast tests run against tiny stdlib HTTP servers in this file; the ``model`` tests start a real
OpenAI-compatible server (llama-cpp-python's ``llama_cpp.server``) on the embedded model, once for
the module, and run the backend, the whole kernel and the CLI against it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llmos.kernel.backends.base import Backend, BackendError, SamplingParams, Stream
from llmos.kernel.backends.openai import OpenAIBackend, OpenAIOptions

CHAT_PROMPT = "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n"
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a tiny scripted server ------------------------------------------------------------------


def sse(*events: dict[str, Any] | str) -> list[bytes]:
    """Server-sent event lines: dicts as JSON, strings as they are (e.g. "[DONE]")."""
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [{"text": text, "index": 0, "finish_reason": finish}]}


MODELS = {"object": "list", "data": [{"id": "first-model", "object": "model"}, {"id": "second", "object": "model"}]}


class FakeServer:
    """A threaded HTTP server on loopback; ``routes[(method, path)]`` answers each request.

    A route is a function of the request body (parsed JSON or None) returning
    ``(status, content_type, body_bytes_or_list_of_stream_lines)``; a list is streamed line by
    line, and a ``None`` in it drops the connection there.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.routes: dict[tuple[str, str], Callable[[Any], tuple[int, str, Any]]] = {
            ("GET", "/v1/models"): lambda body: (200, "application/json", json.dumps(MODELS).encode()),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                server.requests.append((method, self.path, dict(self.headers), body))
                route = server.routes.get((method, self.path))
                status, kind, payload = route(body) if route else (404, "application/json", b'{"detail":"Not Found"}')
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if isinstance(payload, bytes):
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for line in payload:
                        if line is None:
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(line)
                        self.wfile.flush()
                except OSError:
                    pass  # the client let go of the stream

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stream(self, *responses: list[bytes | None]) -> None:
        """Answer successive POST /v1/completions with these SSE streams."""
        queue = list(responses)
        self.routes[("POST", "/v1/completions")] = lambda body: (200, "text/event-stream", queue.pop(0))

    def completions(self) -> list[dict[str, Any]]:
        return [body for method, path, _, body in self.requests if path == "/v1/completions"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def loaded(fake: FakeServer, **options: Any) -> OpenAIBackend:
    backend = OpenAIBackend(OpenAIOptions(fake.url, timeout_s=5.0, **options))
    backend.load()
    return backend


def read_all(stream: Stream, per_call: int = 2) -> tuple[str, list[list[str]]]:
    calls = []
    while not stream.finished:
        calls.append(stream.next(per_call))
        assert len(calls) < 500, "the stream never finished"
    return "".join(p for call in calls for p in call), calls


# --- fast tests --------------------------------------------------------------------------------


def test_the_backend_satisfies_the_protocol() -> None:
    backend = OpenAIBackend(OpenAIOptions("http://127.0.0.1:1/v1/"))
    assert isinstance(backend, Backend)
    assert (backend.name, backend.supports_scoring, backend.on_switch) == ("openai", False, None)
    assert backend.base_url == "http://127.0.0.1:1/v1" and backend.n_ctx == 8192
    with pytest.raises(NotImplementedError):
        backend.score(1, "prompt", ["a", "b"])


def test_make_backend_builds_it_from_the_config() -> None:
    from llmos.kernel.backends import make_backend
    from llmos.kernel.config import Config

    backend = make_backend(Config(backend="openai", base_url="http://127.0.0.1:5/v1", api_key="k", remote_model="m"))
    assert isinstance(backend, OpenAIBackend)
    assert backend.options == OpenAIOptions("http://127.0.0.1:5/v1", api_key="k", model="m")


def test_load_against_a_closed_port_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        OpenAIBackend(OpenAIOptions(url)).load()
    message = str(info.value)
    assert url in message and "connection refused" in message.lower()
    assert "\n" not in message
    assert time.monotonic() - started < 60  # refused, not retried until a timeout (only a hang fails)


def test_load_rejects_a_url_that_is_not_http() -> None:
    with pytest.raises(BackendError, match="not an http"):
        OpenAIBackend(OpenAIOptions("ftp://127.0.0.1/v1")).load()


def test_load_picks_the_first_model_and_reads_the_context_size(fake: FakeServer) -> None:
    fake.routes[("GET", "/props")] = lambda body: (
        200, "application/json", b'{"default_generation_settings": {"n_ctx": 4096}}')
    backend = loaded(fake)
    assert backend.model_id == "first-model"
    assert fake.url in backend.model and "first-model" in backend.model
    assert backend.n_ctx == 4096


def test_load_keeps_the_asked_model_and_defaults_the_context(fake: FakeServer) -> None:
    backend = loaded(fake, model="second")
    assert backend.model_id == "second" and backend.n_ctx == 8192


def test_load_sends_the_api_key(fake: FakeServer) -> None:
    loaded(fake, api_key="sekret")
    assert fake.requests[0][2].get("Authorization") == "Bearer sekret"
    loaded(fake)
    assert "Authorization" not in fake.requests[-1][2]


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, b"<html>garbage</html>", "did not answer JSON"),
    (200, b'{"object": "list"}', "did not answer an OpenAI model list"),
    (200, b'{"object": "list", "data": []}', "lists no models"),
    (500, b'{"error": {"message": "the GPU caught fire"}}', "HTTP 500"),
])
def test_load_explains_a_bad_answer(fake: FakeServer, status: int, body: bytes, expected: str) -> None:
    fake.routes[("GET", "/v1/models")] = lambda _: (status, "application/json", body)
    with pytest.raises(BackendError) as info:
        loaded(fake)
    message = str(info.value)
    assert expected in message and f"{fake.url}/models" in message and "\n" not in message
    if status == 500:
        assert "the GPU caught fire" in message


def test_a_stream_yields_the_canned_pieces(fake: FakeServer) -> None:
    fake.stream(sse(chunk("Hel"), chunk("lo"), chunk(","), chunk(" world"), chunk("", "stop"), "[DONE]"))
    backend = loaded(fake, api_key="k")
    params = SamplingParams(max_tokens=50, temperature=0.3, top_p=0.9, stop=("\nUser:",), seed=7)
    stream = backend.open(3, "PROMPT", params)
    assert isinstance(stream, Stream) and not stream.finished
    assert stream.next(2) == ["Hel", "lo"]
    assert stream.stats.first_token_at is not None and stream.stats.generated_tokens == 2
    assert stream.next(5) == [",", " world"]
    assert stream.finished and stream.stats.finish_reason == "stop" and stream.stats.generated_tokens == 4
    assert stream.next(5) == []
    (body,) = fake.completions()
    assert body == {
        "prompt": "PROMPT", "stream": True, "max_tokens": 50, "temperature": 0.3, "top_p": 0.9,
        "stop": ["\nUser:", "<|im_end|>"], "seed": 7, "model": "first-model",
    }
    assert fake.requests[-1][2].get("Authorization") == "Bearer k"
    stream.close()


def test_a_stream_reports_length(fake: FakeServer) -> None:
    fake.stream(sse(chunk("a"), chunk("b"), chunk("c", "length"), "[DONE]"))
    stream = loaded(fake).open(1, "P", SamplingParams(max_tokens=3))
    text, _ = read_all(stream)
    assert text == "abc" and stream.stats.finish_reason == "length" and stream.stats.generated_tokens == 3


def test_a_json_schema_is_sent_as_a_grammar(fake: FakeServer) -> None:
    fake.stream(sse(chunk('{"name": "Al", "age": 3}', "stop"), "[DONE]"))
    stream = loaded(fake).open(1, "P", SamplingParams(), json_schema=PERSON_SCHEMA)
    read_all(stream)
    (body,) = fake.completions()
    assert "root ::=" in body["grammar"] and '\\"age\\"' in body["grammar"]
    assert "json_schema" not in body  # older llama-servers refuse both


def test_llmos_serve_gets_the_schema_as_json_schema(fake: FakeServer) -> None:
    listed = {"object": "list", "data": [{"id": "qwen", "object": "model", "owned_by": "llmos", "max_model_len": 4096}]}
    fake.routes[("GET", "/v1/models")] = lambda body: (200, "application/json", json.dumps(listed).encode())
    fake.stream(sse(chunk('{"name": "Al", "age": 3}', "stop"), "[DONE]"))
    backend = loaded(fake)
    assert backend.n_ctx == 4096
    read_all(backend.open(1, "P", SamplingParams(), json_schema=PERSON_SCHEMA))
    (body,) = fake.completions()
    assert body["json_schema"] == PERSON_SCHEMA and "grammar" not in body


def test_a_stream_cut_short_continues_with_a_new_request(fake: FakeServer) -> None:
    fake.stream(
        sse(chunk("Hel"), chunk("lo"), "[DONE]"),  # no finish reason: cut short
        sse(chunk(" there"), chunk("", "stop"), "[DONE]"),
    )
    stream = loaded(fake).open(1, "PROMPT", SamplingParams(max_tokens=10))
    text, _ = read_all(stream, per_call=5)
    assert text == "Hello there" and stream.stats.finish_reason == "stop"
    first, second = fake.completions()
    assert (second["prompt"], second["max_tokens"]) == ("PROMPTHello", 8)
    assert first["prompt"] == "PROMPT" and first["max_tokens"] == 10


def test_done_without_text_or_finish_reason_ends_the_stream(fake: FakeServer) -> None:
    fake.stream(sse("[DONE]"))
    stream = loaded(fake).open(1, "P", SamplingParams())
    assert stream.next(4) == [] and stream.stats.finish_reason == "stop"


def test_a_paused_stream_lets_go_and_resumes(fake: FakeServer) -> None:
    long_a = sse(*[chunk(f"a{i} ") for i in range(200)], chunk("", "stop"), "[DONE]")
    fake.stream(long_a, sse(chunk("b"), chunk("", "stop"), "[DONE]"), sse(chunk("rest", "stop"), "[DONE]"))
    backend = loaded(fake)
    a = backend.open(1, "A:", SamplingParams(max_tokens=300))
    assert a.next(2) == ["a0 ", "a1 "]
    time.sleep(0.3)  # paused
    b = backend.open(2, "B:", SamplingParams())
    assert read_all(b)[0] == "b"
    assert a.next(10) == ["rest"] and a.finished  # asked again for what is left
    third = fake.completions()[2]
    assert third["prompt"] == "A:a0 a1 " and third["max_tokens"] == 298


def test_a_constrained_stream_keeps_its_response_and_cannot_resume(fake: FakeServer) -> None:
    fake.stream(sse(chunk('{"name": '), chunk('"Al", "age": 3}', "stop"), "[DONE]"), sse(chunk("b", "stop"), "[DONE]"),
                sse(chunk("{"), "[DONE]"))
    backend = loaded(fake)
    a = backend.open(1, "A:", SamplingParams(), json_schema=PERSON_SCHEMA)
    assert a.next(1) == ['{"name": ']
    assert read_all(backend.open(2, "B:", SamplingParams()))[0] == "b"
    assert a.next(5) == ['"Al", "age": 3}'] and a.finished  # not let go: its grammar would restart
    cut = backend.open(3, "C:", SamplingParams(), json_schema=PERSON_SCHEMA)
    with pytest.raises(BackendError, match="cut short"):
        read_all(cut)
    assert len(fake.completions()) == 3


def test_a_paused_stream_that_nobody_interrupts_keeps_its_response(fake: FakeServer) -> None:
    fake.stream(sse(*[chunk(str(i)) for i in range(10)], chunk("", "stop"), "[DONE]"))
    stream = loaded(fake).open(1, "P", SamplingParams())
    assert stream.next(3) == ["0", "1", "2"]
    time.sleep(0.5)
    assert read_all(stream, per_call=3)[0] == "3456789"
    assert len(fake.completions()) == 1


def test_a_connection_dropped_before_any_text_is_an_error(fake: FakeServer) -> None:
    fake.stream([b": ping\n\n", None])
    stream = loaded(fake).open(1, "P", SamplingParams())
    with pytest.raises(BackendError) as info:
        stream.next(4)
    assert f"{fake.url}/completions" in str(info.value) and "\n" not in str(info.value)


def test_a_connection_dropped_after_text_is_resumed_or_reported(fake: FakeServer) -> None:
    fake.stream(sse(chunk("one"), chunk(" two")) + [None])
    stream = loaded(fake).open(1, "P", SamplingParams())
    assert stream.next(2) == ["one", " two"]
    fake.routes[("POST", "/v1/completions")] = lambda body: (500, "application/json", b'{"detail": "overloaded"}')
    with pytest.raises(BackendError, match="HTTP 500.*overloaded"):
        stream.next(2)


def test_errors_at_open_and_mid_stream(fake: FakeServer) -> None:
    backend = loaded(fake)
    fake.routes[("POST", "/v1/completions")] = lambda body: (500, "text/plain", b"Internal\nServer  Error")
    with pytest.raises(BackendError) as info:
        backend.open(1, "P", SamplingParams()).next(2)
    assert str(info.value) == f"the server at {fake.url}/completions answered HTTP 500 Internal Server Error: Internal Server Error"
    fake.stream(sse(chunk("x"), {"error": {"message": "out of memory"}}))
    with pytest.raises(BackendError, match="failed mid-stream.*out of memory"):
        read_all(backend.open(1, "P", SamplingParams()))
    fake.stream([b"data: {not json\n\n"])
    with pytest.raises(BackendError, match="non-object"):
        read_all(backend.open(1, "P", SamplingParams()))
    fake.routes[("POST", "/v1/completions")] = lambda body: (200, "application/json", json.dumps(chunk("x")).encode())
    with pytest.raises(BackendError, match="did not stream"):
        read_all(backend.open(1, "P", SamplingParams()))


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        with pytest.raises(BackendError, match="timed out"):
            OpenAIBackend(OpenAIOptions(url, timeout_s=0.5)).load()


def test_tokenize_uses_the_server_or_estimates(fake: FakeServer) -> None:
    backend = loaded(fake)
    assert len(backend.tokenize("x" * 40)) == 10  # no endpoint: 1 token per 4 characters
    probes = len(fake.requests)
    assert len(backend.tokenize("y" * 9)) == 3
    assert len(fake.requests) == probes  # asked once, remembered
    fake.routes[("POST", "/tokenize")] = lambda body: (200, "application/json", json.dumps(
        {"tokens": list(range(len(body["content"].split())))}).encode())
    other = loaded(fake)
    assert other.tokenize("one two three") == [0, 1, 2]
    assert other.tokenize("a b") == [0, 1]


def test_close_lets_go_of_the_live_response(fake: FakeServer) -> None:
    fake.stream(sse(*[chunk("z") for i in range(50)], "[DONE]"))
    backend = loaded(fake)
    stream = backend.open(1, "P", SamplingParams())
    stream.next(1)
    assert backend._live == [stream]
    backend.close()
    assert backend._live == [] and stream._resp is None
    backend.release(1)  # a no-op, never an error


# --- a real server: llama_cpp.server on the embedded model ------------------------------------


@pytest.fixture(scope="module", params=["llama_cpp.server", "llmos serve"])
def server_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server on the embedded model, in its own process: llama-cpp-python's,
    and llmos's own (``llmos serve``, as another machine would run it: the scale-out path)."""
    from llmos.kernel.model_file import default_model_path

    model = default_model_path()
    if not model.is_file():
        pytest.fail(f"the embedded model is missing at {model}: run `make test` (it installs it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    log_path = folder / "server.log"
    if request.param == "llama_cpp.server":
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                   "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    else:
        command = [sys.executable, "-m", "llmos.app.cli", "--data-dir", str(folder / "data"), "serve",
                   "--port", str(port)]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        limit = 120 if request.param == "llama_cpp.server" else 900  # llmos calibrates its decisions first
        deadline = time.monotonic() + limit
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{request.param} exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{request.param} did not answer within {limit} s:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture()
def remote(server_url: str) -> Iterator[OpenAIBackend]:
    backend = OpenAIBackend(OpenAIOptions(server_url, timeout_s=300))
    backend.load()
    yield backend
    backend.close()


@pytest.mark.model
def test_real_load_finds_the_model(remote: OpenAIBackend, server_url: str) -> None:
    from llmos.kernel.model_file import default_model_path

    assert remote.model_id in (str(default_model_path()), default_model_path().stem)  # the file, or its name
    assert remote.model == f"{server_url} {remote.model_id}"
    tokens = remote.tokenize("hello world")
    assert len(tokens) == 2 and all(isinstance(t, int) and t > 255 for t in tokens)  # the model's own ids


@pytest.mark.model
def test_real_stream_in_several_slices(remote: OpenAIBackend) -> None:
    stream = remote.open(1, CHAT_PROMPT, SamplingParams(max_tokens=40))
    text, calls = read_all(stream, per_call=2)
    assert text.strip()
    assert sum(1 for call in calls if call) >= 2 and all(len(call) <= 2 for call in calls)
    # however long the model's reply is here: it ended by itself, or at the limit and not past it
    stats = stream.stats
    assert stats.generated_tokens <= 40
    assert stats.finish_reason == "stop" or (stats.finish_reason == "length" and stats.generated_tokens == 40)
    assert "<|im_end|>" not in text


@pytest.mark.model
def test_real_max_tokens_is_respected(remote: OpenAIBackend) -> None:
    prompt = "<|im_start|>user\nWrite a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"
    stream = remote.open(1, prompt, SamplingParams(max_tokens=6))
    text, _ = read_all(stream, per_call=4)
    assert text and stream.stats.finish_reason == "length" and stream.stats.generated_tokens == 6


@pytest.mark.model
def test_real_json_schema_is_enforced(remote: OpenAIBackend) -> None:
    prompt = ("<|im_start|>user\nDescribe a fictional person as a JSON object with a name and an age."
              "<|im_end|>\n<|im_start|>assistant\n")
    stream = remote.open(1, prompt, SamplingParams(max_tokens=80), json_schema=PERSON_SCHEMA)
    text, _ = read_all(stream, per_call=8)
    assert stream.stats.finish_reason == "stop"
    value = json.loads(text)
    jsonschema.validate(value, PERSON_SCHEMA)


@pytest.mark.model
def test_real_preempted_stream_resumes_with_the_same_text(remote: OpenAIBackend) -> None:
    prompt = "<|im_start|>user\nCount from 1 to 10, separated by spaces.<|im_end|>\n<|im_start|>assistant\n"
    whole = remote.open(1, prompt, SamplingParams(max_tokens=40))
    reference, _ = read_all(whole, per_call=8)
    a = remote.open(1, prompt, SamplingParams(max_tokens=40))
    first = a.next(3)
    b = remote.open(2, CHAT_PROMPT, SamplingParams(max_tokens=10))
    assert read_all(b, per_call=4)[0]
    rest, _ = read_all(a, per_call=8)
    assert "".join(first) + rest == reference
    assert a.stats.finish_reason == whole.stats.finish_reason  # it ended as the uninterrupted one did


@pytest.mark.model
def test_real_kernel_answers_over_the_remote_backend(server_url: str) -> None:
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    kernel = Kernel(OpenAIBackend(OpenAIOptions(server_url, timeout_s=300)), DeviceRegistry.from_entry_points()).start()
    try:
        kernel.wait_ready(60)
        result = kernel.ask("Say hello in one short sentence.").result(timeout=300)
    finally:
        kernel.shutdown()
    assert result.answer.strip()
    assert result.timings["total_s"] > 0 and not result.stopped


@pytest.mark.model
def test_real_cli_ask_json(server_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmos.app.cli", "--backend", "openai", "--base-url", server_url,
         "ask", "--json", "Say hi"],
        capture_output=True, text=True, timeout=400, env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert set(reply) == {"answer", "syscalls", "process", "timings"}
    assert isinstance(reply["answer"], str) and reply["process"]["name"] == "ask"
