"""The OpenAI-compatible HTTP API on a running kernel (Starlette; served by uvicorn).

Every generation request is a kernel process at the ``api`` priority, named for its client
(``api 127.0.0.1:51234``), listed in the task manager while it runs and removed from the table
when it ends. A streamed request whose client goes away is killed at once.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmos.kernel import events
from llmos.kernel.loop import Kernel, TurnError
from llmos.kernel.process import Priority

from . import programs, tools
from .programs import Completion
from .requests import (
    ApiError, ChatRequest, Sampling, chat_request, completion_request, embedding_request, parse_json,
)

log = logging.getLogger(__name__)

OS_MODEL = "llmos"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_WAITING = 8


@dataclass
class ServeOptions:
    api_key: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    # generation requests that may wait for the model while one holds it; one more is a 429
    max_waiting: int = MAX_WAITING


class Admission:
    """How many generation requests are in the kernel, and whether one more may come in.

    The kernel time-slices one model: of the requests in it, one holds the model and the rest
    wait their slice. When ``max_waiting`` are waiting, the next request is a 429 whose
    ``Retry-After`` is the recent time a request took (at least a second), so a client that
    honours it (the openai client does) comes back when one has left."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.inside = 0
        self._seconds = 1.0  # a moving average of how long a request took

    def enter(self) -> float:
        if self.inside - 1 >= self.max_waiting:
            retry = max(1, math.ceil(self._seconds))
            raise ApiError(429, f"{self.inside - 1} requests are waiting for the model already (this server "
                                f"queues {self.max_waiting}); retry in {retry} s", type="rate_limit_error",
                           code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
        self.inside += 1
        return time.monotonic()

    def leave(self, entered: float) -> None:
        self.inside -= 1
        self._seconds = 0.7 * self._seconds + 0.3 * (time.monotonic() - entered)


def plain_model_name(kernel: Kernel) -> str:
    """The plain model's name: the GGUF file's stem (or the remote model's name)."""
    return Path(kernel.backend.model).name.removesuffix(".gguf")


class _Job:
    """One request in the kernel: its process, its pieces as they come, its result."""

    def __init__(self, kernel: Kernel, client: str, admission: Admission) -> None:
        self.kernel = kernel
        self.admission = admission
        self.entered: float | None = None
        self.loop = asyncio.get_running_loop()
        # text, or a ready chat delta (a client tool call); None once the request is over
        self.pieces: asyncio.Queue[str | dict[str, Any] | None] = asyncio.Queue()
        self.client = client
        self.pid: int | None = None

    def on_piece(self, piece: str | dict[str, Any]) -> None:  # kernel thread
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, piece)

    async def spawn(self, **history: Any) -> int:
        self.entered = self.admission.enter()  # the event loop's thread: no lock needed
        try:
            self.pid = await asyncio.to_thread(self.kernel.spawn, f"api {self.client}", Priority.API, **history)
        except BaseException:
            self._leave()
            raise
        return self.pid

    async def run(self, text: str, program: Callable[..., Any]) -> "asyncio.Future[Completion]":
        assert self.pid is not None
        future = asyncio.wrap_future(self.kernel.submit(self.pid, text, program=program))
        future.add_done_callback(lambda _: self.pieces.put_nowait(None))
        return future

    def end(self) -> None:
        """The request is over (answered, failed, or its client left): called once or more."""
        if self.pid is not None:
            self.kernel.kill(self.pid, reap=True)
            self.pid = None
        self._leave()

    def _leave(self) -> None:
        if self.entered is not None:
            self.admission.leave(self.entered)
            self.entered = None


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


async def _body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over {limit:,} bytes", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over {limit:,} bytes", code="request_too_large")
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


def _outcome(result: Completion) -> Completion:
    if result.refused is not None:
        message, code = result.refused
        raise ApiError(400, message, param="messages", code=code)
    return result


def _usage(result: Completion) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


class Api:
    def __init__(self, kernel: Kernel, options: ServeOptions) -> None:
        self.kernel = kernel
        self.options = options
        self.models = [plain_model_name(kernel), OS_MODEL]
        self.admission = Admission(options.max_waiting)

    # --- the routes -------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        # max_model_len as vLLM lists it: llmos's remote backend (and others) read the context size
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "llmos", "max_model_len": self.kernel.backend.n_ctx}
            for name in self.models]})

    async def processes(self, request: Request) -> Response:
        """The kernel's process table (``llmos ps``; the desktop's own processes too when it serves)."""
        return JSONResponse({"processes": json.loads(json.dumps(self.kernel.processes(), default=str))})

    async def tokenize(self, request: Request) -> Response:
        """llama-server's ``POST /tokenize`` (``{"content": text}``): the plain model's token ids."""
        body = await _body(request, self.options.max_body_bytes)
        text = _get_text(body, "content")
        return JSONResponse({"tokens": await asyncio.to_thread(self.kernel.backend.tokenize, text)})

    async def chat_completions(self, request: Request) -> Response:
        body = await _body(request, self.options.max_body_bytes)
        chat = chat_request(body)
        functions, choice = tools.parse_tools(body)
        job = await self._job(request, chat.sampling)
        if functions and chat.sampling.model == OS_MODEL:
            raise ApiError(400, f"client tools are for the plain model ({self.models[0]}); '{OS_MODEL}' "
                                "calls its own devices", param="tools")
        if functions or any(m.tool_calls or m.role == "tool" for m in chat.messages):
            shown = [] if choice.mode == "none" else functions
            text, program = "", tools.tool_completion(chat.messages, shown, choice, chat.sampling,
                                                      on_piece=job.on_piece)
            await job.spawn()
        elif chat.sampling.model == OS_MODEL:
            try:
                history, text = programs.os_history(chat.messages)
            except ValueError as exc:
                raise ApiError(400, str(exc), param="messages") from None
            await job.spawn(history=history)
            program = programs.os_turn(text)
            self._forward_tokens(job)
        else:
            text, program = "", self._plain_chat(chat, job)
            await job.spawn()
        return await self._answer(job, text, program, chat.sampling, "chat.completion")

    async def completions(self, request: Request) -> Response:
        req = completion_request(await _body(request, self.options.max_body_bytes))
        job = await self._job(request, req.sampling)
        if req.sampling.model == OS_MODEL:
            raise ApiError(400, f"'{OS_MODEL}' answers chat completions only; use {self.models[0]}", param="model")
        program = programs.completion(req.prompt, req.sampling, schema=req.schema, on_piece=job.on_piece)
        await job.spawn()
        return await self._answer(job, "", program, req.sampling, "text_completion")

    async def embeddings(self, request: Request) -> Response:
        req = embedding_request(await _body(request, self.options.max_body_bytes))
        if req.model not in (*self.models, EMBEDDING_MODEL):
            raise self._unknown_model(req.model)
        vectors, counts = await asyncio.to_thread(_embed, req.texts)
        data = []
        for index, vector in enumerate(vectors):
            value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode() if req.base64 else vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": value})
        return JSONResponse({"object": "list", "data": data, "model": EMBEDDING_MODEL,
                             "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}})

    # --- generation -------------------------------------------------------------------------

    async def _job(self, request: Request, sampling: Sampling) -> _Job:
        if sampling.model not in self.models:
            raise self._unknown_model(sampling.model)
        return _Job(self.kernel, _client(request), self.admission)

    def _unknown_model(self, name: str) -> ApiError:
        return ApiError(404, f"the model '{name}' does not exist (this server has: {', '.join(self.models)})",
                        param="model", code="model_not_found")

    def _plain_chat(self, chat: ChatRequest, job: _Job) -> Callable[..., Any]:
        return programs.completion(programs.chat_prompt(chat.messages), chat.sampling, schema=chat.schema,
                                   stop=(programs.END_OF_TURN,), on_piece=job.on_piece)

    def _forward_tokens(self, job: _Job) -> None:
        """The OS's turn streams its answer as Token events of its process, and each system call
        it made as a delta of its own (``llmos_syscall``: the record the journal keeps). The pid is
        taken now: the job forgets it when it ends, before the process's "done" unsubscribes this."""
        pid = job.pid

        def observe(event: events.Event) -> None:
            if isinstance(event, events.Token) and event.pid == pid:
                job.on_piece(event.text)
            elif isinstance(event, events.SyscallFinished) and event.pid == pid:
                job.on_piece({"llmos_syscall": syscall_record({
                    "device": event.device, "call": event.call, "arguments": event.arguments,
                    "result": event.result if event.ok else None, "error": event.error, "ok": event.ok,
                    "trusted": event.trusted, "seconds": round(event.seconds, 4)})})
            elif isinstance(event, events.ProcessStateChanged) and event.pid == pid and event.new == "done":
                unsubscribe()

        unsubscribe = self.kernel.bus.subscribe(observe)

    async def _answer(self, job: _Job, text: str, program: Callable[..., Any], sampling: Sampling,
                      kind: str) -> Response:
        ident = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        try:
            future = await job.run(text, program)
        except BaseException:
            job.end()
            raise
        try:
            # a request refused or failed before its first token still gets its own status
            first = await job.pieces.get() if sampling.stream else None
            if first is not None:
                return EventSourceResponse(self._stream(job, first, future, ident, sampling, kind), sep="\n",
                                           ping=15)
            result = _outcome(await _result(future))
        except BaseException:
            job.end()
            raise
        if sampling.stream:  # nothing was generated
            return EventSourceResponse(self._stream(job, None, future, ident, sampling, kind), sep="\n")
        job.end()
        choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason, "logprobs": None}
        if kind == "chat.completion":
            choice["message"] = {"role": "assistant", "content": result.answer}
            if result.tool_calls:
                choice["message"] = {"role": "assistant", "content": None, "tool_calls": result.tool_calls}
            if result.syscalls:  # the llmos model's own device calls
                choice["message"]["llmos_syscalls"] = [syscall_record(r) for r in result.syscalls]
        else:
            choice["text"] = result.answer
        return JSONResponse({"id": ident, "object": kind, "created": int(time.time()), "model": sampling.model,
                             "choices": [choice], "usage": _usage(result)})

    async def _stream(self, job: _Job, first: str | dict[str, Any] | None, future: "asyncio.Future[Completion]", ident: str,
                      sampling: Sampling, kind: str) -> AsyncIterator[dict[str, str]]:
        chat = kind == "chat.completion"
        created = int(time.time())

        def chunk(delta: dict[str, Any] | str | None, finish: str | None = None, **more: Any) -> dict[str, str]:
            if chat:
                choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                     "logprobs": None}]
            else:
                choices = [] if delta is None else [{"index": 0, "text": delta, "finish_reason": finish,
                                                     "logprobs": None}]
            body = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": created, "model": sampling.model, "choices": choices, **more}
            return {"data": _json(body)}

        try:
            if chat:
                yield chunk({"role": "assistant", "content": ""})
            piece = first  # None: the request ended before a first piece
            while piece is not None:
                if isinstance(piece, dict):
                    yield chunk(piece)
                elif piece:
                    yield chunk({"content": piece} if chat else piece)
                piece = await job.pieces.get()
            try:
                result = _outcome(await _result(future))
            except ApiError as exc:  # the status is sent already: the error is the stream's last event
                yield {"data": _json(exc.body())}
                return
            yield chunk({} if chat else "", result.finish_reason)
            if sampling.include_usage:
                yield chunk(None, usage=_usage(result))
            yield {"data": "[DONE]"}
        finally:  # finished, failed, or the client went away (the generator is cancelled)
            job.end()


async def _result(future: "asyncio.Future[Completion]") -> Completion:
    try:
        return await future
    except TurnError as exc:
        log.warning("a request failed in the engine: %s", exc)
        raise ApiError(500, f"the engine failed: {exc}", type="server_error", code="engine_error") from None


def _embed(texts: list[str]) -> tuple[Any, list[int]]:
    from llmos.memory.embedder import default_embedder

    embedder = default_embedder()
    return embedder.embed_array(texts), embedder.token_counts(texts)


SYSCALL_RESULT_CHARS = 2000


def syscall_record(record: dict[str, Any]) -> dict[str, Any]:
    """A system call as a client sees it: JSON all through, a long result cut (the journal keeps it whole)."""
    out = dict(record)
    value = out.get("result")
    if value is not None and not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, str) and len(value) > SYSCALL_RESULT_CHARS:
        value = value[:SYSCALL_RESULT_CHARS] + " …"
    out["result"] = value
    out["arguments"] = json.loads(json.dumps(out.get("arguments") or {}, default=str))
    return out


def _get_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string", param=name)
    return value


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


# --- the application ------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                 code=code).body(), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(ApiError(500, f"internal server error: {type(exc).__name__}: {exc}",
                                 type="server_error").body(), status_code=500)


class _KeyCheck:
    """ASGI middleware: with a key, every request needs ``Authorization: Bearer <key>``."""

    def __init__(self, app: Any, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.key is not None:
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:] if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.key.encode()):
                message = "a wrong API key" if token else "no API key (send Authorization: Bearer KEY)"
                response = JSONResponse(ApiError(401, f"this server needs its API key: {message}",
                                                 code="invalid_api_key").body(), status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def make_app(kernel: Kernel, options: ServeOptions | None = None) -> Any:
    """The ASGI application for ``kernel`` (started, model loaded)."""
    options = options or ServeOptions()
    api = Api(kernel, options)
    app = Starlette(
        routes=[
            Route("/v1/models", api.list_models, methods=["GET"]),
            Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
            Route("/v1/completions", api.completions, methods=["POST"]),
            Route("/v1/embeddings", api.embeddings, methods=["POST"]),
            Route("/tokenize", api.tokenize, methods=["POST"]),
            Route("/llmos/processes", api.processes, methods=["GET"]),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    return _KeyCheck(app, options.api_key)
