"""The checks of `llmos doctor` (app/doctor.py), one function each, grouped as the report is.

Each check takes the :class:`Context` and returns a :class:`Check` (or a list of them): ``ok``,
``warn`` (something a headless machine lacks that llmos does not need to run: a sound card, a
display) or ``fail`` (llmos, or one of its parts, is broken here), with a fix for each failure.
No kernel is built: the engine is proven in a subprocess, as the kernel proves it before loading.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.kernel.backends import model_path as _model_path
from llmos.kernel.config import Config, ConfigError
from llmos.kernel.devices import one_line

OK, WARN, FAIL = "ok", "warn", "fail"
SETUP = "run `make setup` in the llmos checkout"


@dataclass
class Check:
    group: str
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""
    seconds: float = 0.0  # how long the check took (set by the doctor)


@dataclass
class Context:
    """What the checks share: the config (or the default one when it does not load) and findings."""

    load_config: Callable[[], Config]
    config_path: Path
    fallback_config: Callable[[], Config]
    recheck: bool = False
    other_model: Path | None = None
    config: Config = field(default_factory=Config)
    model_ok: bool = False
    data_ok: bool = False




# --- config -----------------------------------------------------------------------------------


def check_config(ctx: Context) -> Check:
    try:
        ctx.config = ctx.load_config()
    except ConfigError as exc:
        ctx.config = ctx.fallback_config()
        return Check("config", "config", FAIL, str(exc),
                     f"edit {ctx.config_path}, or the LLMOS_<KEY> variable or flag that sets the key "
                     "(README, Configuration, lists them); the other checks used the defaults")
    where = f"{ctx.config_path}" if ctx.config_path.is_file() else f"no file at {ctx.config_path}: the defaults"
    return Check("config", "config", OK, where)


def check_devices(ctx: Context) -> Check:
    from llmos.kernel.registry import DeviceRegistry

    registry = DeviceRegistry.from_entry_points()
    names = sorted(d.name for d in registry.devices())
    if registry.broken:
        broken = "; ".join(f"{b.name} ({b.target}): {b.error}" for b in registry.broken)
        return Check("config", "devices", FAIL, f"{len(registry.broken)} device plugins do not load: {broken}",
                     "reinstall the plugin package (or uninstall it); the built-in ones come with " + SETUP)
    return Check("config", "devices", OK, f"{len(names)} devices: {', '.join(names)}")


def check_sandbox(ctx: Context) -> Check:
    """The python device runs code only inside bubblewrap, unless the config opts out."""
    from llmos.plugins.python.sandbox import sandbox_status

    mode = str(ctx.config.devices.get("python", {}).get("sandbox", "required"))
    status = sandbox_status()
    if status.available:
        return Check("config", "sandbox", OK, status.detail)
    if mode == "off":
        return Check("config", "sandbox", WARN, f"{status.detail}; [devices.python] sandbox = \"off\": "
                     "python.run runs code without a boundary", "install bubblewrap and remove the opt-out")
    return Check("config", "sandbox", WARN, f"{status.detail}: python.run refuses to run code",
                 "`sudo apt-get install bubblewrap` (make setup does it), or opt out with "
                 "[devices.python] sandbox = \"off\"")


def check_mcp_servers(ctx: Context) -> list[Check]:
    servers = (ctx.config.mcp or {}).get("servers", {}) if isinstance(ctx.config.mcp, dict) else None
    if not isinstance(servers, dict):
        return [Check("config", "mcp", FAIL, "the `mcp.servers` config key is not a table",
                      f"write each server as [mcp.servers.<name>] in {ctx.config_path}")]
    if not servers:
        return [Check("config", "mcp", OK, "no MCP servers configured")]
    from llmos.plugins.mcp import sanitise_name, start_mcp

    bridge = start_mcp(servers)  # they start concurrently, each within its startup timeout
    try:
        checks = []
        started = {d.name: d for d in bridge.devices}
        errors = dict(bridge.errors)
        for raw in servers:
            name = sanitise_name(str(raw))
            if name in started:
                calls = sorted(started[name].calls)
                checks.append(Check("config", f"mcp {name}", OK, f"started, {len(calls)} tools: {', '.join(calls)}"))
            else:
                checks.append(Check("config", f"mcp {name}", FAIL, errors.get(name, "did not start"),
                                    f"fix `command`/`args` of [mcp.servers.{raw}] in {ctx.config_path} "
                                    "(run that command in a terminal to see why it stops), or remove the table"))
        return checks
    finally:
        bridge.close()


# --- models -----------------------------------------------------------------------------------


def check_model(ctx: Context) -> Check:
    from llmos.kernel.model_file import ModelFileError, check_gguf, known_model_at, sha256_of

    config = ctx.config
    if config.backend != "llamacpp":
        return Check("models", "model", OK, f"not used: the {config.backend} backend runs the model at {config.base_url}")
    path = _model_path(config)
    known = known_model_at(path)  # the embedded default, or another model llmos installs
    install = SETUP if known is None or known.install_command == "make model" else f"run `{known.install_command}`"
    reinstall = f"remove {path} and {install} (it joins the model's parts again and checks their sha256)"
    try:
        check_gguf(path)
    except ModelFileError as exc:
        return Check("models", "model", FAIL, str(exc), reinstall if known is not None else
                     "point `model` (or --model) at a complete GGUF file, or empty it for the embedded model")
    if known is None:
        ctx.model_ok = True
        return Check("models", "model", OK, f"{path} is a GGUF file (no known sha256: `--model {path}` checks it)")
    digest = sha256_of(path)
    if digest != known.sha256:
        return Check("models", "model", FAIL, f"{path} has sha256 {digest[:16]}..., not {known.sha256[:16]}...: "
                     "the file is damaged", reinstall)
    ctx.model_ok = True
    return Check("models", "model", OK, f"{path.name}, sha256 verified")


def check_whisper(ctx: Context) -> list[Check]:
    import hashlib

    from llmos.kernel.model_file import models_dir
    from llmos.peripherals.whisper_weights import WeightsError, WhisperModel, is_current, source_bytes, weights_path

    checks = []
    fix = f"{SETUP} (tools/install_whisper.py converts the weights again)"
    for model in WhisperModel:
        name = f"whisper {model.value}"
        path = weights_path(models_dir(), model)
        try:
            if not path.is_file():
                raise WeightsError(f"{path} is missing")
            if not is_current(path, hashlib.sha256(source_bytes(model)).hexdigest()):
                raise WeightsError(f"{path} was not converted from the installed weights (sha256 of the source differs)")
            with zipfile.ZipFile(path) as zf:  # torch's checkpoint format; the CRCs cover every byte
                bad = zf.testzip()
            if bad is not None:
                raise WeightsError(f"{path} is damaged (member {bad} fails its checksum)")
        except (WeightsError, OSError, zipfile.BadZipFile) as exc:
            checks.append(Check("models", name, FAIL, one_line(exc), fix))
            continue
        checks.append(Check("models", name, OK, f"{path}, source sha256 verified"))
    return checks


def check_embedder(ctx: Context) -> Check:
    from llmos.memory.embedder import EmbedderError, default_embedder

    try:
        vector = default_embedder().embed_one("doctor")
    except (EmbedderError, OSError) as exc:
        return Check("models", "embedder minilm", FAIL, one_line(exc), SETUP)
    return Check("models", "embedder minilm", OK, f"all-MiniLM-L6-v2 int8 embeds ({len(vector)} dimensions)")


def check_static_table(ctx: Context) -> Check:
    from llmos.memory.static_embedder import default_table_path, table_status

    problem = table_status()
    if problem:
        return Check("models", "static table", FAIL, problem, f"{SETUP} (tools/install_static_embedder.py, about a minute)")
    return Check("models", "static table", OK, f"{default_table_path()}, built from the installed MiniLM")


def check_other_model(ctx: Context) -> list[Check]:
    """``--model PATH``: the file, its chat template and context length, and a decode in a subprocess."""
    from llmos.kernel.backends import engine
    from llmos.kernel.model_file import (GGUFArray, ModelFileError, chat_template_family, context_length,
                                         read_gguf_metadata)

    path = ctx.other_model
    assert path is not None
    label = path.name
    try:
        metadata = read_gguf_metadata(path)
    except ModelFileError as exc:
        return [Check("models", label, FAIL, str(exc), "give a complete GGUF file")]
    checks = [Check("models", label, OK, f"GGUF, {metadata.get('general.architecture', '?')} "
                                          f"{metadata.get('general.name', '')}".rstrip())]
    template = metadata.get("tokenizer.chat_template")
    family = chat_template_family(template) if isinstance(template, str) else None
    if family == "chatml":
        checks.append(Check("models", f"{label} chat template", OK, "ChatML, the format llmos prompts in"))
    elif family is not None:
        checks.append(Check("models", f"{label} chat template", WARN,
                            f"{family}: llmos prompts in ChatML, so its answers and system calls may be poor"))
    else:
        checks.append(Check("models", f"{label} chat template", FAIL,
                            "no chat template in the file" if template is None or isinstance(template, GGUFArray)
                            else "a chat template llmos does not know",
                            "use an instruct model whose template is ChatML (<|im_start|>), as Qwen's are"))
    n_ctx = context_length(metadata)
    if n_ctx is None:
        checks.append(Check("models", f"{label} context", FAIL, "no context length in the metadata",
                            "the file is incomplete or not a language model: use another GGUF"))
    else:
        fits = ctx.config.n_ctx <= n_ctx
        checks.append(Check("models", f"{label} context", OK if fits else WARN,
                            f"trained for {n_ctx} tokens" + ("" if fits else
                            f"; n_ctx = {ctx.config.n_ctx} is longer: answers past {n_ctx} may degrade")))
    choice = engine.cached_choice(_model_path(ctx.config))
    path_name = choice.path if choice is not None and choice.path else engine.PATH_NAMES[-1]
    try:
        result = engine.smoke(engine.path_named(path_name), path)
    except engine.EngineError as exc:
        result = engine.SmokeResult(path_name, False, error=str(exc))
    if result.ok:
        checks.append(Check("models", f"{label} decode", OK, f"loads and decodes on {path_name}, "
                                                               f"{result.tokens_per_s or 0:.1f} tokens/s"))
    else:
        checks.append(Check("models", f"{label} decode", FAIL, f"{path_name}: {result.error}",
                            "llama.cpp cannot run this file here: use another GGUF (or quantisation)"))
    return checks


# --- engine -----------------------------------------------------------------------------------


def check_engine(ctx: Context) -> Check:
    from llmos.kernel.backends import engine

    model = engine.cpu_signature().split("|")[1] or "this CPU"
    where = f"on {model} ({' '.join(engine.cpu_features()) or 'no SIMD features llama.cpp uses'})"
    if ctx.config.backend != "llamacpp":
        return Check("engine", "engine", OK, f"not used (the {ctx.config.backend} backend) {where}")
    if not ctx.model_ok:
        return Check("engine", "engine", WARN, f"not checked: the model file is not usable (see models) {where}")
    path = _model_path(ctx.config)
    recheck = f"`llmos doctor --recheck` proves the paths again and picks one that runs; {SETUP} rebuilds them"
    try:
        choice, result = None if ctx.recheck else engine.cached_choice(path), None
        if choice is None or choice.path is None:  # proved now: its smoke decode has just run
            choice = engine.choose(path, recheck=ctx.recheck)
            result = next((r for r in choice.results if r.path == choice.path), None)
        if choice.path is None:
            return Check("engine", "engine", FAIL, choice.summary(), SETUP + " (it builds the engine paths again)")
        result = result or engine.smoke(engine.path_named(choice.path), path)
    except (engine.EngineError, OSError) as exc:
        return Check("engine", "engine", FAIL, one_line(exc), recheck)
    if not result.ok:
        return Check("engine", "engine", FAIL, f"the smoke decode on {choice.path} {result.error}", recheck)
    known = next((r.tokens for r in choice.results if r.path == choice.path and r.tokens), None)
    if known is not None and list(known) != list(result.tokens):
        return Check("engine", "engine", FAIL, f"{choice.path} now computes other tokens than when it was chosen",
                     recheck)
    why = "" if choice.path == engine.PATH_NAMES[0] or not choice.results else f" [{choice.summary()}]"
    return Check("engine", "engine", OK, f"{choice.path}, {result.tokens_per_s or 0:.1f} tokens/s {where}{why}")


# --- voice ------------------------------------------------------------------------------------


def check_espeak(ctx: Context) -> Check:
    from llmos.peripherals.tts import SpeechSynthesisError, TextToSpeech, TtsOptions

    voice = ctx.config.tts_voice or None
    tts = TextToSpeech(TtsOptions(rate_wpm=ctx.config.tts_rate_wpm, voice=voice))
    try:
        audio = tts.synthesize("ready")
    except SpeechSynthesisError as exc:
        fix = "install espeak-ng (tools/system_deps.sh, run by `make setup`)"
        if voice:
            fix += f", or empty tts_voice ({voice!r} may not exist: `espeak-ng --voices` lists them)"
        return Check("voice", "espeak-ng", FAIL, str(exc), fix)
    finally:
        tts.close()
    return Check("voice", "espeak-ng", OK, f"speaks ({audio.seconds:.2f} s of audio for one word)")


def check_audio(ctx: Context) -> list[Check]:
    try:
        import sounddevice  # noqa: F401  (PortAudio is loaded here)
    except (ImportError, OSError) as exc:
        fix = "install libportaudio2 and the voice packages: " + SETUP
        return [Check("voice", name, FAIL, f"PortAudio is not available ({one_line(exc)})", fix)
                for name in ("audio input", "audio output")]
    from llmos.peripherals.audio import AudioError
    from llmos.peripherals.microphone import SoundDeviceMicrophone
    from llmos.peripherals.playback import SoundDeviceSink

    checks = []
    for name, device, without in (("audio input", SoundDeviceMicrophone, "voice mode cannot listen "
                                   "(`llmos voice --input WAV` reads a file instead)"),
                                  ("audio output", SoundDeviceSink, "replies cannot be heard "
                                   "(`llmos voice --output WAV` writes them to a file)")):
        try:
            device().close()
        except AudioError as exc:
            checks.append(Check("voice", name, WARN, f"{exc}: {without}"))
            continue
        checks.append(Check("voice", name, OK, "the default device opens"))
    return checks


# --- display ----------------------------------------------------------------------------------

_QT_PROBE = ("from PySide6.QtGui import QGuiApplication\n"
             "app = QGuiApplication([])\n"
             "print(app.platformName())\n")


def _display() -> str:
    return os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY") or ""


def check_display(ctx: Context) -> Check:
    display, platform = _display(), os.environ.get("QT_QPA_PLATFORM", "")
    if display:
        return Check("display", "display", OK, f"{'WAYLAND_DISPLAY' if os.environ.get('WAYLAND_DISPLAY') else 'DISPLAY'}={display}")
    if platform:
        return Check("display", "display", WARN, f"no display; QT_QPA_PLATFORM={platform}: the window draws "
                                                 "but is not shown (`llmos chat` works in the terminal)")
    return Check("display", "display", WARN, "no display (DISPLAY, WAYLAND_DISPLAY): the desktop window is "
                                             "unavailable; `llmos chat` works in the terminal")


def check_qt(ctx: Context) -> Check:
    """A QGuiApplication in a subprocess (Qt aborts its process when its platform cannot start)."""
    env, note = dict(os.environ), ""
    if not _display() and not env.get("QT_QPA_PLATFORM"):
        env["QT_QPA_PLATFORM"] = "offscreen"  # nothing to show on: check that Qt itself works
        note = " (no display: tried offscreen)"
    fix = "install PySide6 and the xcb libraries: " + SETUP
    try:
        proc = subprocess.run([sys.executable, "-c", _QT_PROBE], capture_output=True, text=True, env=env,
                              timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return Check("display", "qt", FAIL, "Qt did not start within 60 s", fix)
    platform = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not platform:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Check("display", "qt", FAIL, f"Qt cannot start: {tail[:200]}", fix)
    return Check("display", "qt", OK, f"PySide6 starts on the {platform} platform{note}")


# --- data -------------------------------------------------------------------------------------


def check_data_dir(ctx: Context) -> Check:
    folder = ctx.config.resolved_data_dir()
    fix = "give llmos a folder it can write: --data-dir DIR, LLMOS_DATA_DIR or data_dir in the config"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-") as fh:
            fh.write(b"llmos")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return Check("data", "data dir", FAIL, f"{folder} is not writable ({exc.strerror or one_line(exc)})", fix)
    ctx.data_ok = True
    return Check("data", "data dir", OK, f"{folder} is writable")


def check_journal(ctx: Context) -> Check:
    from llmos.app.boot import journal_path
    from llmos.memory.journal import Journal, JournalError

    path = journal_path(ctx.config)
    if not ctx.data_ok:
        return Check("data", "journal", WARN, f"not checked: the data directory is not usable ({path})")
    if not path.exists():
        return Check("data", "journal", OK, f"none yet ({path} is made at the first conversation)")
    try:
        journal = Journal(path)
        try:
            verdict = journal.integrity_check()
        finally:
            journal.close()
    except JournalError as exc:
        verdict = str(exc)
    if verdict != "ok":
        return Check("data", "journal", FAIL, f"{path}: {verdict}" if not verdict.startswith("journal ") else verdict,
                     f"move it aside (mv {path} {path}.broken) and llmos starts a new one; "
                     f"`sqlite3 {path}.broken .recover` may save its conversations")
    return Check("data", "journal", OK, f"{path}: integrity check ok")


def check_store(ctx: Context) -> Check:
    from llmos.app.memory_cli import store_path
    from llmos.memory.disk import DiskStore, StoreError

    path, url = store_path(ctx.config), ctx.config.chroma_url or None
    if not ctx.data_ok:
        return Check("data", "memory store", WARN, f"not checked: the data directory is not usable ({path})")
    if url is None and not path.exists():
        return Check("data", "memory store", OK, f"none yet ({path} is made when something is remembered)")
    try:
        store = DiskStore(path, url=url, document_embedder=ctx.config.document_embedder)
        try:
            counts = f"{store.count('memories')} memories, {store.count('documents')} document chunks"
        finally:
            store.close()
    except StoreError as exc:
        fix = "start the Chroma server, or empty chroma_url" if url else \
            "`llmos memory reindex` rebuilds it from the journal and the original files"
        return Check("data", "memory store", FAIL, one_line(exc), fix)
    return Check("data", "memory store", OK, f"opens: {counts}")


# --- the list -----------------------------------------------------------------------------------


def checks(ctx: Context) -> list[Callable[[Context], Any]]:
    """The checks in the order they run (and are reported): each sees what those before found."""
    found: list[Callable[[Context], Any]] = [
        check_config, check_devices, check_sandbox, check_mcp_servers,
        check_model, check_whisper, check_embedder, check_static_table,
    ]
    if ctx.other_model is not None:
        found.append(check_other_model)
    found += [check_engine, check_espeak, check_audio, check_display, check_qt,
              check_data_dir, check_journal, check_store]
    return found
