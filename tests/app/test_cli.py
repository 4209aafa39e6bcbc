"""The `llmos` command line, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def llmos(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmos.app.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_devices_lists_the_calculator_with_its_schema():
    done = llmos("devices", "--json")
    assert done.returncode == 0, done.stderr
    devices = {d["name"]: d for d in json.loads(done.stdout)["devices"]}
    call = devices["calculator"]["calls"][0]
    assert call["name"] == "calculator.evaluate"
    assert call["parameters"]["required"] == ["expression"]
    text = llmos("devices").stdout
    assert "calculator.evaluate(expression: string)" in text


def test_devices_call_runs_the_device_as_the_kernel_would():
    done = llmos("devices", "call", "calculator.evaluate", "--args", '{"expression": "2**10"}')
    assert done.returncode == 0 and done.stdout.strip() == "1024"
    done = llmos("devices", "--json", "call", "calculator.evaluate", "--args", '{"expression": "17.5% of 2480"}')
    assert json.loads(done.stdout)["result"] == "434"


@pytest.mark.parametrize(
    "args, message",
    [
        (('{"expression": "__import__(\'os\')"}',), "unexpected character"),
        (('{"expr": "1"}',), "invalid arguments"),
        (("not json",), "--args is not valid JSON"),
    ],
)
def test_devices_call_errors_are_one_line_and_non_zero(args, message):
    done = llmos("devices", "call", "calculator.evaluate", "--args", *args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.model
def test_ask_json_reports_answer_syscalls_process_and_timings(model_path):
    done = llmos("ask", "--json", "What is 1234 * 5678?", timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"answer", "syscalls", "process", "timings"}
    assert out["syscalls"][0]["device"] == "calculator" and out["syscalls"][0]["result"] == "7006652"
    assert set(out["syscalls"][0]) >= {"device", "call", "arguments", "result", "ok", "seconds"}
    assert "7006652" in out["answer"].replace(",", "")
    assert set(out["timings"]) >= {"ttft_s", "tokens", "tokens_per_s"}
    assert out["process"]["pid"] >= 1


@pytest.mark.model
def test_ask_streams_the_answer_and_shows_the_syscall(model_path):
    done = llmos("ask", "What is 1234 * 5678?", timeout=600)
    assert done.returncode == 0, done.stderr
    assert "[syscall] calculator.evaluate" in done.stdout
    assert "7006652" in done.stdout.replace(",", "")
