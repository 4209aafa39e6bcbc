"""Remembered permission grants (GrantStore) and the grant policy's precedence."""

from __future__ import annotations

import json
import logging
import threading

from llmos.kernel.devices import Device, Permission
from llmos.kernel.grants import GrantStore, grants_path
from llmos.kernel.registry import DeviceRegistry
from llmos.kernel.syscalls.dispatch import Dispatcher, GrantPolicy


def _web() -> Device:
    web = Device("web", description="Fetches pages.", permissions=["network"])

    @web.call
    def fetch(url: str) -> str:
        """Fetch."""
        return f"page at {url}"

    return web


def _dispatcher(device: Device, policy: GrantPolicy) -> Dispatcher:
    registry = DeviceRegistry()
    registry.register(device)
    return Dispatcher(registry, policy)


def test_store_round_trip_and_revoke(tmp_path):
    store = GrantStore(grants_path(tmp_path))
    assert store.granted("browser") == set()
    store.grant("browser", ["network"])
    store.grant("image", [Permission.FILES_READ, "files.write"])
    again = GrantStore(tmp_path / "grants.json")  # a new run reads the same file
    assert again.granted("browser") == {Permission.NETWORK}
    assert again.all() == {"browser": ["network"], "image": ["files.read", "files.write"]}
    assert json.loads((tmp_path / "grants.json").read_text()) == again.all()
    assert again.revoke("image", ["files.write"]) == {Permission.FILES_READ}
    again.revoke("browser")  # None = all
    assert store.all() == {"image": ["files.read"]}
    assert not list(tmp_path.glob(".grants-*"))  # no temporary files left behind


def test_damaged_file_is_empty_with_a_warning_and_is_repaired_by_a_grant(tmp_path, caplog):
    path = tmp_path / "grants.json"
    path.write_text('{"browser": ["netw', encoding="utf-8")
    store = GrantStore(path)
    with caplog.at_level(logging.WARNING):
        assert store.granted("browser") == set()
        assert store.all() == {}
    assert "damaged" in caplog.text
    path.write_text('{"browser": ["network", "teleport"], "x": 3}', encoding="utf-8")
    assert store.granted("browser") == {Permission.NETWORK}  # the unknown name is skipped
    path.write_text("[1, 2]", encoding="utf-8")
    assert store.all() == {}
    store.grant("browser", ["network"])
    assert json.loads(path.read_text()) == {"browser": ["network"]}


def test_store_is_thread_safe(tmp_path):
    store = GrantStore(tmp_path / "grants.json")
    perms = [p.value for p in Permission]
    threads = [threading.Thread(target=store.grant, args=(f"d{i % 3}", [perms[i % len(perms)]])) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(v) for v in store.all().values()) == 21  # 3 devices x 7 permissions, none lost


def test_policy_precedence_config_store_grant_all(tmp_path):
    web = _web()
    store = GrantStore(tmp_path / "grants.json")
    assert GrantPolicy(store=store).missing(web) == [Permission.NETWORK]
    assert GrantPolicy(["network"], store=store).missing(web) == []  # config: every device
    assert GrantPolicy(grant_all=True, store=store).missing(web) == []
    store.grant("other", ["network"])
    assert GrantPolicy(store=store).missing(web) == [Permission.NETWORK]  # per device
    store.grant("web", ["network"])
    assert GrantPolicy(store=store).missing(web) == []


def test_ask_yes_is_remembered_and_asked_once(tmp_path):
    web, store, asked = _web(), GrantStore(tmp_path / "grants.json"), []

    def ask(device, perms, description):
        asked.append((device, perms, description))
        return True

    policy = GrantPolicy(store=store, ask=ask)
    assert policy.missing(web) == [Permission.NETWORK] and asked == []  # missing() never asks
    assert policy.obtain(web) == [] and policy.obtain(web) == [] and policy.missing(web) == []
    assert asked == [("web", [Permission.NETWORK], "Fetches pages.")]
    assert store.granted("web") == {Permission.NETWORK}
    never = GrantPolicy(store=store, ask=lambda *a: (_ for _ in ()).throw(AssertionError("asked")))
    assert never.obtain(web) == []  # the next run is not asked again


def test_ask_no_is_refused_now_not_remembered(tmp_path):
    web, store, asked = _web(), GrantStore(tmp_path / "grants.json"), []
    policy = GrantPolicy(store=store, ask=lambda *a: asked.append(a) or False)
    result = _dispatcher(web, policy).call_blocking("web.fetch", {"url": "http://x"})
    assert not result.ok and "permission denied" in result.error
    again = _dispatcher(web, policy).call_blocking("web.fetch", {"url": "http://x"})
    assert not again.ok and "permission denied" in again.error
    assert policy.obtain(web) == [Permission.NETWORK] and len(asked) == 1  # once per run
    assert store.all() == {}
    next_run = GrantPolicy(store=store, ask=lambda *a: asked.append(a) or True)
    assert next_run.obtain(web) == [] and len(asked) == 2  # asked again next run


def test_ask_that_raises_is_a_no(tmp_path):
    def boom(*a):
        raise RuntimeError("no terminal")

    assert GrantPolicy(store=GrantStore(tmp_path / "g.json"), ask=boom).obtain(_web()) == [Permission.NETWORK]


def test_no_ask_refuses_with_the_grant_hint_then_grant_allows(tmp_path):
    store = GrantStore(tmp_path / "grants.json")
    dispatcher = _dispatcher(_web(), GrantPolicy(store=store))
    denied = dispatcher.call_blocking("web.fetch", {"url": "http://x"})
    assert not denied.ok and "permission denied" in denied.error
    assert "llmos devices grant web network" in denied.error
    store.grant("web", ["network"])
    allowed = dispatcher.call_blocking("web.fetch", {"url": "http://x"})
    assert allowed.ok and allowed.value == "page at http://x"


def test_the_permission_prompt_runs_on_the_devices_worker_thread_not_the_callers(tmp_path):
    threads: list[str] = []

    def ask(device, perms, description):
        threads.append(threading.current_thread().name)
        return True

    result = _dispatcher(_web(), GrantPolicy(store=GrantStore(tmp_path / "g.json"), ask=ask)).call_blocking(
        "web.fetch", {"url": "http://x"})
    assert result.ok and result.value == "page at http://x"
    assert threads == ["device-web-1"] and threading.current_thread().name not in threads  # its executor's worker


def test_the_kernel_serves_another_process_while_a_permission_prompt_waits(tmp_path):
    from llmos.kernel.backends.scripted import ScriptedBackend
    from llmos.kernel.loop import Kernel

    asking, answer = threading.Event(), threading.Event()

    def slow_user(device, perms, description):  # a dialog the user takes a while to answer
        asking.set()
        assert answer.wait(10)
        return True

    registry = DeviceRegistry()
    registry.register(_web())
    backend = ScriptedBackend(scoring=False)
    backend.enqueue('CALL web.fetch {"url": "http://x"}')
    policy = GrantPolicy(store=GrantStore(tmp_path / "g.json"), ask=slow_user)
    kernel = Kernel(backend, registry, policy=policy).start()
    try:
        first = kernel.ask("fetch x")
        assert asking.wait(5), "the user was never asked"
        backend.enqueue("ANSWER: hello")
        other = kernel.ask("hi")  # served while the first process waits for the user
        assert other.result(5).answer == "hello" and not first.done()
        backend.enqueue("ANSWER: fetched")
        answer.set()
        result = first.result(5)
    finally:
        kernel.shutdown()
    assert result.syscalls[0]["ok"] and result.syscalls[0]["result"] == "page at http://x"
    assert result.answer == "fetched"
