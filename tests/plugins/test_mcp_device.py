"""The MCP bridge against real stdio servers from PyPI (mcp-server-time, mcp-server-fetch); no internet."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import sys
import threading

import pytest

from tests.needs import installed

installed("mcp")

from llmos.kernel.devices import Untrusted  # noqa: E402
from llmos.kernel.registry import DeviceRegistry  # noqa: E402
from llmos.kernel.syscalls.dispatch import Dispatcher, GrantPolicy  # noqa: E402
from llmos.kernel.testing import call_device  # noqa: E402
from llmos.kernel.devices import DeviceContext, Unavailable  # noqa: E402
from llmos.plugins.mcp import make_devices, result_text, sanitise_name, start_mcp  # noqa: E402

TIME_SERVER = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
               "permissions": []}


@pytest.fixture(scope="module")
def time_bridge():
    installed("mcp_server_time")
    bridge = start_mcp({"Time Server": TIME_SERVER})
    yield bridge
    bridge.close()


def test_sanitise_name():
    assert sanitise_name("Get-Current Time") == "get_current_time"
    assert sanitise_name("1password") == "mcp_1password"
    assert sanitise_name("__") == "mcp"
    assert len(sanitise_name("x" * 100)) == 40


def test_time_server_lists_tools_with_schemas(time_bridge):
    assert time_bridge.errors == []
    [device] = time_bridge.devices
    assert device.name == "time_server"
    assert device.permissions == ()
    assert {"get_current_time", "convert_time"} <= set(device.calls)
    params = device.calls["get_current_time"].parameters
    assert params["type"] == "object" and "timezone" in params["properties"]
    assert "timezone" in params.get("required", [])
    assert device.calls["convert_time"].description


def test_get_current_time_is_untrusted(time_bridge, tmp_path):
    [device] = time_bridge.devices
    result = call_device(device, "get_current_time", {"timezone": "UTC"}, data_dir=tmp_path)
    assert result.ok, result.error
    assert result.trusted is False and result.source == "mcp:time_server"
    assert "UTC" in result.value
    assert str(dt.datetime.now(dt.timezone.utc).year) in result.value


def test_function_returns_untrusted_directly(time_bridge):
    [device] = time_bridge.devices
    value = device.calls["get_current_time"].function(timezone="UTC")
    assert isinstance(value, Untrusted) and value.source == "mcp:time_server"


def test_bad_argument_is_an_error_value(time_bridge, tmp_path):
    [device] = time_bridge.devices
    result = call_device(device, "get_current_time", {"timezone": "Not/A_Zone"}, data_dir=tmp_path)
    assert not result.ok and "Not/A_Zone" in result.error  # the tool's isError -> DeviceError
    result = call_device(device, "get_current_time", {"zone": "UTC"}, data_dir=tmp_path)
    assert not result.ok and "timezone" in result.error  # schema validation by the dispatcher


def test_missing_command_is_a_clear_error(tmp_path):
    made = make_devices(DeviceContext(tmp_path, {"servers": {"ghost": {"command": "/no/such/mcp-server-xyz"},
                                                             "empty": {"args": ["x"]}}}))
    assert all(isinstance(m, Unavailable) for m in made)
    names = {m.name: m.error for m in made}
    assert set(names) == {"ghost", "empty"}
    assert "/no/such/mcp-server-xyz" in names["ghost"] and "FileNotFoundError" in names["ghost"]
    assert "command" in names["empty"]


def test_server_that_exits_is_an_error_and_others_still_start():
    bridge = start_mcp({"dies": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"],
                                 "startup_timeout_s": 10},
                        "time": TIME_SERVER})
    try:
        assert [d.name for d in bridge.devices] == ["time"]
        assert [name for name, _ in bridge.errors] == ["dies"]
    finally:
        bridge.close()


def test_closed_server_gives_an_error_value(tmp_path):
    bridge = start_mcp({"time": TIME_SERVER})
    [device] = bridge.devices
    bridge.close()
    result = call_device(device, "get_current_time", {"timezone": "UTC"}, data_dir=tmp_path)
    assert not result.ok and "not running" in result.error


def test_default_permission_is_network(time_bridge):
    bridge = start_mcp({"t": {k: v for k, v in TIME_SERVER.items() if k != "permissions"}})
    try:
        [device] = bridge.devices
        assert [p.value for p in device.permissions] == ["network"]
        registry = DeviceRegistry()
        registry.register(device)
        denied = Dispatcher(registry, GrantPolicy([])).call_blocking("t.get_current_time", {"timezone": "UTC"})
        assert not denied.ok and "permission denied" in denied.error
    finally:
        bridge.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_server_reads_a_local_page(tmp_path):
    installed("mcp_server_fetch")
    (tmp_path / "index.html").write_text(
        "<html><head><title>Llama page</title></head><body><h1>Hello from llmos</h1>"
        "<p>The llama count is 42.</p></body></html>")
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    bridge = start_mcp({"fetch": {"command": sys.executable,
                                  "args": ["-m", "mcp_server_fetch", "--ignore-robots-txt", "--allow-private-ips"]}})
    try:
        assert bridge.errors == []
        [device] = bridge.devices
        assert "fetch" in device.calls and "url" in device.calls["fetch"].parameters["properties"]
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
        result = call_device(device, "fetch", {"url": url}, grants=["network"], data_dir=tmp_path / "d")
        assert result.ok, result.error
        assert result.trusted is False and result.source == "mcp:fetch"
        assert "llama count is 42" in result.value
        # after untrusted content: the same host again runs; a new host needs the user's consent
        here = f"127.0.0.1:{httpd.server_address[1]}"
        asked = []
        again = call_device(device, "fetch", {"url": url}, grants=["network"], data_dir=tmp_path / "d",
                            tainted=True, contacted={here}, consent=lambda r: asked.append(r) or False)
        assert again.ok and asked == []
        elsewhere = call_device(device, "fetch", {"url": "http://localhost:9/x?secret=1"}, grants=["network"],
                                data_dir=tmp_path / "d", tainted=True, contacted={here},
                                consent=lambda r: asked.append(r) or False)
        assert not elsewhere.ok and "consent refused" in elsewhere.error
        assert [r.destinations for r in asked] == [("localhost:9",)]
    finally:
        bridge.close()
        httpd.shutdown()


def test_urls_in_arguments_are_the_destinations():
    from llmos.plugins.mcp import urls_in

    assert urls_in({"url": "https://a.example/x", "n": 3}) == ["https://a.example/x"]
    assert urls_in({"pages": [{"href": "HTTP://b.example"}], "q": "not a url"}) == ["HTTP://b.example"]
    assert urls_in({"query": "weather in Oslo"}) is None  # unknown: counts as somewhere new


def test_result_text_summarises_non_text_content():
    from mcp import types

    result = types.CallToolResult(content=[
        types.TextContent(type="text", text="hello"),
        types.ImageContent(type="image", data="QUJD", mime_type="image/png"),
    ])
    text = result_text(result)
    assert text.startswith("hello\n[image: image/png")


SLOW_SERVER = '''
import time
from mcp.server import MCPServer

server = MCPServer("slow")

@server.tool()
def nap(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return f"slept {seconds}"

@server.tool(name="Fail-Now")
def fail_now() -> str:
    """Always fails."""
    raise ValueError("it broke on purpose")

server.run()
'''


def test_timeout_sanitised_names_and_tool_errors(tmp_path):
    installed("mcp.server", attribute="MCPServer")  # mcp 2.x
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    bridge = start_mcp({"slow": {"command": sys.executable, "args": [str(script)], "permissions": [],
                                 "timeout_s": 1}})
    try:
        assert bridge.errors == []
        [device] = bridge.devices
        assert set(device.calls) == {"nap", "fail_now"}  # "Fail-Now" sanitised, forwarded as is
        late = call_device(device, "nap", {"seconds": 5}, data_dir=tmp_path / "d")
        assert not late.ok and "within 1 s" in late.error
        quick = call_device(device, "nap", {"seconds": 0.05}, data_dir=tmp_path / "d")
        assert quick.ok and quick.value == "slept 0.05" and not quick.trusted
        failed = call_device(device, "fail_now", {}, data_dir=tmp_path / "d")
        assert not failed.ok and "Fail-Now" in failed.error
    finally:
        bridge.close()
