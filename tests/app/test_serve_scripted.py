"""`llmos serve` on a scripted backend (fast, extra to tests/app/test_serve.py's real model): an
engine that fails mid-request is a 500 and the next request is served; the key is checked on
every route; errors keep OpenAI's shape."""

from __future__ import annotations

from collections.abc import Iterator

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
