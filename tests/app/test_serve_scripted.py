"""`llmos serve` on a scripted backend (fast, extra to tests/app/test_serve.py's real model): an
engine that fails mid-request is a 500 and the next request is served; the key is checked on
every route; errors keep OpenAI's shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from llmos.app.server.app import ServeOptions, make_app
from llmos.app.server.http import Server, bind
from llmos.kernel.backends.base import BackendError
from llmos.kernel.backends.scripted import ScriptedBackend
from llmos.kernel.loop import Kernel
from llmos.kernel.registry import DeviceRegistry


def _respond(prompt: str) -> str:
    if "explode" in prompt:
        raise BackendError("the engine fell over")
    return "fine, thanks"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    kernel = Kernel(ScriptedBackend(responder=_respond), DeviceRegistry()).start()
    kernel.wait_ready(30)
    server = Server(make_app(kernel, ServeOptions(api_key="k")), bind("127.0.0.1", 0)).start()
    yield server
    server.stop()
    kernel.shutdown()


def test_an_engine_failure_is_a_500_and_the_server_keeps_serving(server):
    client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "explode"}])
    assert caught.value.body["type"] == "server_error"
    assert "the engine fell over" in caught.value.body["message"]
    reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "how are you"}])
    assert reply.choices[0].message.content == "fine, thanks"


def test_errors_keep_openai_shape(server):
    missing = httpx.get(server.url + "/nothing-here", headers={"authorization": "Bearer k"})
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    no_key = httpx.get(server.url + "/models")
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    n2 = httpx.post(server.url + "/chat/completions", headers={"authorization": "Bearer k"},
                    json={"model": "scripted", "n": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert n2.status_code == 400 and n2.json()["error"]["param"] == "n"


class Held:
    """A server whose model holds any request that says "hold" until ``release`` is set."""

    def __init__(self, options: ServeOptions) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.kernel = Kernel(ScriptedBackend(responder=self._respond), DeviceRegistry()).start()
        self.kernel.wait_ready(30)
        self.server = Server(make_app(self.kernel, options), bind("127.0.0.1", 0)).start()

    def _respond(self, prompt: str) -> str:
        if "hold" in prompt:
            self.started.set()
            self.release.wait(30)
        return "done"

    def close(self) -> None:
        self.release.set()
        self.server.stop()
        self.kernel.shutdown()


HOLD = {"model": "scripted", "messages": [{"role": "user", "content": "hold on"}]}


@pytest.fixture()
def held(request) -> Iterator[Held]:
    h = Held(getattr(request, "param", ServeOptions()))
    yield h
    h.close()


@pytest.mark.parametrize("held", [ServeOptions(max_waiting=0)], indirect=True)
def test_a_request_over_the_waiting_limit_is_a_429_with_retry_after(held):
    client = openai.OpenAI(base_url=held.server.url, api_key="none", max_retries=0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.chat.completions.create, **HOLD)
        assert held.started.wait(30)
        over = httpx.post(held.server.url + "/chat/completions", json=HOLD)
        held.release.set()
        assert first.result(30).choices[0].message.content == "done"
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(over.headers["retry-after"]) >= 1
    # the one that was in has left: the next is served
    again = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
    assert again.choices[0].message.content == "done"
    assert not [p for p in held.kernel.processes() if p["name"].startswith("api ")]


@pytest.mark.parametrize("held", [ServeOptions(api_key="k")], indirect=True)
def test_llmos_ps_lists_a_running_request_with_its_client(held, capsys):
    from llmos.app.cli import main

    client = openai.OpenAI(base_url=held.server.url, api_key="k", max_retries=0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.chat.completions.create, **HOLD)
        assert held.started.wait(30)
        assert main(["ps", "--url", held.server.url, "--api-key", "k", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert main(["ps", "--url", held.server.url, "--api-key", "k"]) == 0
        shown = capsys.readouterr().out.splitlines()
        held.release.set()
        first.result(30)
    [api] = [p for p in listed if p["name"].startswith("api 127.0.0.1:")]
    assert (api["priority"], api["state"]) == ("api", "running")
    assert shown[0].split()[:3] == ["PID", "PRIORITY", "STATE"] and any(api["name"] in line for line in shown[1:])
    assert main(["ps", "--url", held.server.url, "--api-key", "wrong"]) == 1
    assert "401" in capsys.readouterr().err


def test_the_os_model_refuses_a_side_effect_after_untrusted_content_even_with_grants():
    from llmos.kernel.syscalls.dispatch import GrantPolicy
    from tests.app.shell_helpers import registry_with, untrusted_and_writer_devices

    backend = ScriptedBackend(['CALL web.fetch {"url": "http://example.test"}', 'CALL notes.write {"text": "hi"}',
                               "ANSWER: Done."])
    kernel = Kernel(backend, registry_with(*untrusted_and_writer_devices()), policy=GrantPolicy(grant_all=True)).start()
    kernel.wait_ready(30)
    server = Server(make_app(kernel), bind("127.0.0.1", 0)).start()
    try:
        observers = len(kernel.bus._observers)
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="llmos", messages=[{"role": "user", "content": "Read the page and act on it"}])
        kernel.spawn("probe")  # queued after the request's kill: its "done" has been delivered
        left = len(kernel.bus._observers) - observers
    finally:
        server.stop()
        kernel.shutdown()
    assert left == 0, "the request's token observer stayed subscribed"
    fetched, wrote = reply.choices[0].message.model_extra["llmos_syscalls"]
    assert (fetched["device"], fetched["ok"], fetched["trusted"]) == ("web", True, False)
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" in fetched["result"]  # handed back as data
    assert (wrote["device"], wrote["ok"]) == ("notes", False)  # nobody at the server can consent
    assert "consent" in wrote["error"] or "refused" in wrote["error"], wrote["error"]
