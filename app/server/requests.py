"""OpenAI's request bodies, read and checked: each problem is an :class:`ApiError` in OpenAI's
error shape (``{"error": {"message", "type", "param", "code"}}``) with its HTTP status.

Fields OpenAI defines that llmos does not use (``user``, ``frequency_penalty``, ...) are ignored;
a field it uses with a value of the wrong type is a 400 naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmos.kernel.syscalls.grammar import GrammarError, bounded_schema, to_gbnf

MAX_STOP = 4


class ApiError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",  # noqa: A002
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _get(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None, *, what: str) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python; JSON's true is not a number
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ApiError(400, f"'{name}' must be {what}, not {json.dumps(value)[:60]}", param=name)
    return value


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = float(_get(body, name, (int, float), default, what="a number"))
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g}, not {value:g}", param=name)
    return value


def _positive(body: dict[str, Any], name: str) -> int | None:
    value = _get(body, name, (int,), None, what="an integer")
    if value is not None and value < 1:
        raise ApiError(400, f"'{name}' must be at least 1, not {value}", param=name)
    return value


@dataclass
class Sampling:
    """What every generation request shares."""

    model: str
    max_tokens: int | None  # None: as much as the context holds (chat) or 16 (completions)
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int
    stream: bool
    include_usage: bool


def _sampling(body: dict[str, Any], max_tokens: int | None) -> Sampling:
    model = _get(body, "model", (str,), None, what="a string")
    if not model:
        raise ApiError(400, "'model' is required", param="model")
    if _get(body, "n", (int,), 1, what="an integer") != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    stop = _get(body, "stop", (str, list), [], what="a string or a list of strings")
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"'stop' must be at most {MAX_STOP} non-empty strings", param="stop")
    options = _get(body, "stream_options", (dict,), {}, what="an object")
    return Sampling(
        model=model,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        stop=tuple(stop),
        seed=_get(body, "seed", (int,), 0, what="an integer") & 0xFFFFFFFF,
        stream=bool(_get(body, "stream", (bool,), False, what="a boolean")),
        include_usage=bool(options.get("include_usage")),
    )


@dataclass(frozen=True)
class ToolCall:
    """A call an assistant message made (``tool_calls``): its id, function and JSON arguments."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass
class ChatMessage:
    role: str  # system, user, assistant, tool ("developer" is read as system)
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers


@dataclass
class ChatRequest:
    sampling: Sampling
    messages: list[ChatMessage]
    schema: dict[str, Any] | None = None  # response_format: the bounded schema to generate under


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _content(value: Any, index: int) -> str:
    """A message's content: a string, or a list of text parts."""
    param = f"messages[{index}].content"
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, "only text content parts are supported", param=param)
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, "a message's content must be a string or a list of text parts", param=param)


def _messages(body: dict[str, Any]) -> list[ChatMessage]:
    raw = _get(body, "messages", (list,), None, what="a list of messages")
    if not raw:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    messages = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{index}] needs a role: one of {', '.join(ROLES)}",
                           param=f"messages[{index}].role")
        role = ROLES[message["role"]]
        calls = _tool_calls(message.get("tool_calls"), index) if role == "assistant" else ()
        call_id = message.get("tool_call_id") if role == "tool" else None
        if call_id is not None and not isinstance(call_id, str):
            raise ApiError(400, "'tool_call_id' must be a string", param=f"messages[{index}].tool_call_id")
        messages.append(ChatMessage(role, _content(message.get("content"), index), calls, call_id))
    return messages


def _tool_calls(raw: Any, index: int) -> tuple[ToolCall, ...]:
    param = f"messages[{index}].tool_calls"
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ApiError(400, "'tool_calls' must be a list", param=param)
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiError(400, "each tool call needs a function with a name", param=param)
        arguments = function.get("arguments") or "{}"
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        try:
            json.loads(arguments)
        except json.JSONDecodeError:
            raise ApiError(400, f"the arguments of the call to {function['name']} are not JSON", param=param) from None
        calls.append(ToolCall(str(call.get("id") or ""), function["name"], arguments))
    return tuple(calls)


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """``response_format`` as the bounded schema its answer is generated under, or None for text.

    A schema no grammar can be made of (too deep, too big, one llama.cpp would refuse) is a 400:
    it never reaches llama.cpp."""
    fmt = _get(body, "response_format", (dict,), None, what="an object")
    if fmt is None or fmt.get("type", "text") == "text":
        return None
    if fmt.get("type") == "json_object":
        schema: Any = {"type": "object"}
    elif fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema must be a JSON schema object",
                           param="response_format")
    else:
        raise ApiError(400, "response_format.type must be text, json_object or json_schema",
                       param="response_format")
    return _bounded(schema, "response_format")


def _bounded(schema: dict[str, Any], param: str) -> dict[str, Any]:
    try:
        bounded = bounded_schema(schema)
        to_gbnf(bounded)
    except GrammarError as exc:
        raise ApiError(400, f"{param}: {exc}", param=param, code="invalid_schema") from None
    return bounded


def chat_request(body: dict[str, Any]) -> ChatRequest:
    max_tokens = _positive(body, "max_completion_tokens") or _positive(body, "max_tokens")
    sampling = _sampling(body, max_tokens)
    return ChatRequest(sampling, _messages(body), response_schema(body))


@dataclass
class CompletionRequest:
    sampling: Sampling
    prompt: str
    schema: dict[str, Any] | None = None  # llama-server's json_schema: the bounded schema to generate under


def completion_request(body: dict[str, Any]) -> CompletionRequest:
    prompt = _get(body, "prompt", (str, list), None, what="a string")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ApiError(400, "'prompt' must be one string (a list of one is accepted)", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise ApiError(400, "'prompt' must be a non-empty string", param="prompt")
    # llama-server's field (llmos's remote backend sends it here); a GBNF ``grammar`` is not taken
    schema = _get(body, "json_schema", (dict,), None, what="a JSON schema object")
    return CompletionRequest(_sampling(body, _positive(body, "max_tokens") or 16), prompt,
                             None if schema is None else _bounded(schema, "json_schema"))


@dataclass
class EmbeddingRequest:
    model: str
    texts: list[str]
    base64: bool


def embedding_request(body: dict[str, Any]) -> EmbeddingRequest:
    model = _get(body, "model", (str,), "", what="a string")
    texts = _get(body, "input", (str, list), None, what="a string or a list of strings")
    texts = [texts] if isinstance(texts, str) else texts
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ApiError(400, "'input' must be a non-empty string or a list of them (token arrays are not "
                            "supported)", param="input")
    encoding = _get(body, "encoding_format", (str,), "float", what="a string")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be float or base64", param="encoding_format")
    return EmbeddingRequest(model, texts, encoding == "base64")
