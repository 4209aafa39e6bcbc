"""`llmos serve` against the official `openai` client, on the real model over loopback HTTP.

One kernel and one server per module (the model is the session's); each test is a real request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llmos.app.serve_cli import add_parser  # noqa: F401 (the CLI wiring imports)
from llmos.app.server.app import OS_MODEL, ServeOptions, make_app, plain_model_name
from llmos.app.server.http import Server, ServeError, bind, check_bind
from llmos.kernel import events

pytestmark = pytest.mark.model

KEY = "test-key-4242"


@pytest.fixture(scope="module")
def served(real_backend) -> Iterator[tuple[object, Server]]:
    from llmos.kernel.loop import Kernel
    from llmos.kernel.registry import DeviceRegistry

    kernel = Kernel(real_backend, DeviceRegistry.from_entry_points()).start()
    try:
        kernel.wait_ready(900)  # the decision calibration, on a shared machine
        server = Server(make_app(kernel, ServeOptions(api_key=KEY, max_body_bytes=256 * 1024)),
                        bind("127.0.0.1", 0)).start()
        yield kernel, server
        server.stop()
    finally:
        kernel.shutdown(close_backend=False)


@pytest.fixture()
def client(served) -> openai.OpenAI:
    _, server = served
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture()
def model(served) -> str:
    return plain_model_name(served[0])


def _post(served, path: str, content: bytes, key: str | None = KEY) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(served[1].url + path, content=content, headers=headers, timeout=300)


def _assert_serving(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} >= {OS_MODEL}


def test_models_are_the_plain_model_and_the_os(client, model):
    assert [m.id for m in client.models.list()] == [model, OS_MODEL]


def test_a_streamed_answer_joins_into_the_plain_one(client, model):
    messages = [{"role": "user", "content": "Name three primary colours."}]
    plain = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=40)
    text = plain.choices[0].message.content
    assert text.strip()
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert 0 < plain.usage.completion_tokens <= 40
    assert plain.usage.prompt_tokens > 5
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    stream = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=40,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert joined == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_max_tokens_stops_at_length(client, model):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count from 1 to 100, one number a line."}],
        temperature=0, max_completion_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5


def test_stop_sequence_cuts_the_answer(client, model):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        temperature=0, max_tokens=60, stop=["5"])
    text = reply.choices[0].message.content
    assert "4" in text and "5" not in text and "6" not in text


def test_response_format_json_schema(client, model):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=model, temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "Give the largest city of Japan and its population as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"city", "population"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The name of the city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The temperature unit"}},
        "required": ["city"]}}}
STOCK = {"type": "function", "function": {
    "name": "get_stock_price", "description": "Get the latest price of a stock by its ticker symbol.",
    "parameters": {"type": "object", "properties": {"ticker": {"type": "string", "description": "e.g. AAPL"}},
                   "required": ["ticker"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Oslo right now?"}]


def _valid_arguments(call, tool) -> dict:
    import jsonschema

    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, tool["function"]["parameters"])
    return arguments


def test_a_client_tool_round_trip(client, model):
    first = client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=[WEATHER, STOCK],
                                           temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert "oslo" in _valid_arguments(call, WEATHER)["city"].lower()
    assert first.usage.completion_tokens > 0

    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps(
        {"city": "Oslo", "temperature_celsius": 23, "sky": "sunny"})}
    second = client.chat.completions.create(
        model=model, tools=[WEATHER, STOCK], temperature=0, max_tokens=80,
        messages=[*ASK_WEATHER, choice.message.model_dump(exclude_none=True), result])
    answer = second.choices[0]
    assert not answer.message.tool_calls and answer.finish_reason in ("stop", "length")
    assert "23" in answer.message.content and not answer.message.content.startswith("ANSWER")


def test_tool_choice_none_answers_without_a_call(client, model):
    reply = client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=[WEATHER],
                                           tool_choice="none", temperature=0, max_tokens=40)
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].message.content.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_named_or_required_function_is_called(client, model):
    named = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "How is Apple doing on the market today?"}],
        tools=[WEATHER, STOCK], tool_choice={"type": "function", "function": {"name": "get_stock_price"}},
        temperature=0)
    [call] = named.choices[0].message.tool_calls
    assert call.function.name == "get_stock_price"
    _valid_arguments(call, STOCK)
    required = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello there!"}], tools=[WEATHER],
        tool_choice="required", temperature=0)
    [call] = required.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    _valid_arguments(call, WEATHER)


def test_a_streamed_tool_call_joins_into_the_plain_one(client, model):
    plain = client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=[WEATHER], temperature=0)
    [expected] = plain.choices[0].message.tool_calls
    chunks = list(client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=[WEATHER],
                                                 temperature=0, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].id and deltas[0].function.name == "get_weather"
    assert len({d.index for d in deltas}) == 1
    assert "".join(d.function.arguments or "" for d in deltas) == expected.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_bad_tools_are_400_and_the_server_stays_up(client, model):
    unbounded = {"type": "function", "function": {"name": "essay", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "minLength": 100000}}}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=ASK_WEATHER, tools=[unbounded])
    assert caught.value.body["code"] == "invalid_schema"
    assert caught.value.body["param"] == "tools[0].function.parameters"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=OS_MODEL, messages=ASK_WEATHER, tools=[WEATHER])
    assert caught.value.body["param"] == "tools"
    _assert_serving(client)


def test_a_schema_llama_cpp_cannot_compile_is_a_400(client, model):
    # a minLength over the grammar's bound: no grammar can be made, so it never reaches llama.cpp
    schema = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 100000}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Write."}],
            response_format={"type": "json_schema", "json_schema": {"name": "essay", "schema": schema}})
    assert caught.value.body["code"] == "invalid_schema"
    _assert_serving(client)


# --- a second real client: simonw's `llm` CLI, with the server as an OpenAI-compatible model entry ---


@pytest.fixture()
def llm_cli(served, model, tmp_path):
    """Runs ``llm`` (its own process, its own user directory) against the server."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: llmos-local\n  model_name: {model}\n  api_base: {served[1].url}\n"
        "  api_key_name: llmos\n  supports_tools: true\n", encoding="utf-8")
    binary = Path(sys.executable).with_name("llm")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(binary), "prompt", "-m", "llmos-local", "--key", KEY, "-o", "temperature", "0",
                               *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "LLM_USER_PATH": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        return done

    return run


def test_the_llm_cli_streams_what_the_openai_client_gets(llm_cli, client, model):
    question = "Name three primary colours."
    plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                           temperature=0, max_tokens=40).choices[0].message.content
    assert llm_cli("-o", "max_tokens", "40", question).stdout.strip() == plain.strip()  # llm streams by default


def test_the_llm_cli_runs_a_tool_chain(llm_cli):
    function = ('def get_weather(city: str) -> str:\n    "Get the current weather in a city."\n'
                '    return "23 degrees celsius and sunny in " + city\n')
    # llm's chain limit counts every response, the answer too: 2 would stop it before the answer
    done = llm_cli("--functions", function, "--td", "--cl", "4", ASK_WEATHER[0]["content"])
    # --td shows each call and its result on stderr; the answer is on stdout
    calls = [line for line in done.stderr.splitlines() if line.startswith("Tool call: ")]
    assert len(calls) == 1 and calls[0].startswith("Tool call: get_weather(") and "oslo" in calls[0].lower(), done.stderr
    assert "23" in done.stdout and not done.stdout.startswith("ANSWER"), done.stdout


def test_embeddings(client):
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly tax filing deadlines."]
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64 on the wire
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384] * 3
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > len(texts)
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


def test_the_os_answers_with_its_calculator(served, client):
    kernel, _ = served
    calls: list[events.SyscallFinished] = []
    unsubscribe = kernel.bus.subscribe(lambda e: calls.append(e) if isinstance(e, events.SyscallFinished) else None)
    try:
        reply = client.chat.completions.create(
            model=OS_MODEL, messages=[{"role": "user", "content": "What is 1234 * 5678?"}])
    finally:
        unsubscribe()
    assert [(c.device, c.ok) for c in calls] == [("calculator", True)]
    assert "7006652" in reply.choices[0].message.content.replace(",", "")
    assert reply.usage.completion_tokens > 0
    [record] = reply.choices[0].message.model_extra["llmos_syscalls"]  # the OS's own system-call record
    assert (record["device"], record["ok"], record["trusted"]) == ("calculator", True, True)
    assert "7006652" in record["result"].replace(",", "")


def test_the_os_streams_its_system_calls_before_the_answer(client):
    stream = client.chat.completions.create(
        model=OS_MODEL, messages=[{"role": "user", "content": "What is 4321 * 8765?"}], stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    calls = [i for i, d in enumerate(deltas) if (d.model_extra or {}).get("llmos_syscall")]
    assert len(calls) == 1
    record = deltas[calls[0]].model_extra["llmos_syscall"]
    assert record["device"] == "calculator" and record["ok"] and "37873565" in record["result"].replace(",", "")
    answer = "".join(d.content or "" for d in deltas[calls[0] + 1:])
    assert "37873565" in answer.replace(",", "")


def test_raw_completions_plain_and_streamed(client, model):
    prompt = "def fibonacci(n):\n"
    plain = client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0)
    assert plain.choices[0].text.strip()
    assert plain.usage.completion_tokens <= 24
    streamed = "".join(c.choices[0].text for c in
                       client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=0, stream=True)
                       if c.choices)
    assert streamed == plain.choices[0].text


def test_what_llmos_remote_backend_reads_is_served(served, client, model):
    kernel, server = served
    listed = {m.id: m for m in client.models.list()}
    assert listed[model].model_extra["max_model_len"] == kernel.backend.n_ctx
    root = server.url.removesuffix("/v1")
    tokens = httpx.post(root + "/tokenize", json={"content": "hello world"}, headers={"authorization": f"Bearer {KEY}"})
    assert tokens.status_code == 200 and tokens.json()["tokens"] == kernel.backend.tokenize("hello world")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    reply = client.completions.create(
        model=model, max_tokens=60, temperature=0, extra_body={"json_schema": schema},
        prompt="<|im_start|>user\nA fictional person as JSON.<|im_end|>\n<|im_start|>assistant\n")
    assert set(json.loads(reply.choices[0].text)) == {"name", "age"}
    bad = _post(served, "/completions", json.dumps({"model": model, "prompt": "x", "json_schema": {
        "type": "object", "properties": {"essay": {"type": "string", "minLength": 100000}}}}).encode())
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "json_schema"


def test_requests_are_api_processes_removed_when_done(served, client, model):
    kernel, _ = served
    created: list[events.ProcessCreated] = []
    ended = threading.Event()

    def observe(event: events.Event) -> None:
        if isinstance(event, events.ProcessCreated):
            created.append(event)
        elif isinstance(event, events.ProcessStateChanged) and created and event.pid == created[0].pid \
                and event.new == "done":
            ended.set()

    unsubscribe = kernel.bus.subscribe(observe)
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert ended.wait(5.0), "the request's process did not end"
    finally:
        unsubscribe()
    assert len(created) == 1
    assert created[0].priority == "api" and created[0].name.startswith("api 127.0.0.1:")
    assert created[0].pid not in {p["pid"] for p in kernel.processes()}


def test_a_client_that_disconnects_mid_stream_has_its_process_killed(served, client, model):
    kernel, server = served
    pids: list[int] = []
    gone = threading.Event()

    def observe(event: events.Event) -> None:
        if isinstance(event, events.ProcessCreated) and event.priority == "api":
            pids.append(event.pid)
        elif isinstance(event, events.ProcessStateChanged) and pids and event.pid == pids[0] and event.new == "done":
            gone.set()

    unsubscribe = kernel.bus.subscribe(observe)
    try:
        body = {"model": model, "stream": True, "max_tokens": 2000, "temperature": 0,
                "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}]}
        with httpx.stream("POST", server.url + "/chat/completions", json=body,
                          headers={"authorization": f"Bearer {KEY}"}, timeout=300) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            while not next(lines).startswith("data: {") or len(pids) == 0:
                pass
            assert kernel.processes()[-1]["pid"] == pids[0]  # running, while the client reads
        # the connection is closed here, mid-answer
        assert gone.wait(1.0), "the process outlived its client by more than a second"
    finally:
        unsubscribe()
    assert pids[0] not in {p["pid"] for p in kernel.processes()}
    _assert_serving(client)


def test_bad_input_gets_its_status_and_the_server_stays_up(served, client, model):
    broken = _post(served, "/chat/completions", b'{"model": "x", "messages": [')
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"

    bad_type = _post(served, "/chat/completions", json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).encode())
    assert bad_type.status_code == 400 and bad_type.json()["error"]["param"] == "temperature"

    huge = _post(served, "/chat/completions", b" " * (257 * 1024))
    assert huge.status_code == 413

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served[1].url, api_key="wrong", max_retries=0).models.list()
    assert _post(served, "/embeddings", b"{}", key=None).status_code == 401

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["code"] == "model_not_found"

    too_long = " ".join(["lighthouse"] * 9000)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": too_long}])
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:  # streamed: still a status, before any event
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": too_long}], stream=True)
    assert caught.value.body["code"] == "context_length_exceeded"

    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say OK."}],
                                           max_tokens=4)
    assert reply.choices[0].message.content


def test_a_non_loopback_bind_without_a_key_is_refused():
    with pytest.raises(ServeError, match="without an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "a-key")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)


def test_the_cli_refuses_a_public_bind_without_a_key(capsys):
    from llmos.app.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without an API key" in err[0]


def test_the_cli_takes_its_address_from_the_config(capsys, monkeypatch):
    from llmos.app.cli import main

    monkeypatch.setenv("LLMOS_SERVE_HOST", "0.0.0.0")
    monkeypatch.delenv("LLMOS_SERVE_API_KEY", raising=False)
    assert main(["serve", "--port", "0"]) == 1
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err
