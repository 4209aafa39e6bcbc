"""From a process's messages to the text the model reads (ChatML, as the Qwen models use).

The assistant side of the conversation follows the system-call protocol of
:mod:`llmos.kernel.syscalls.protocol`: an assistant turn is either ``CALL <device.call> <JSON>``
or ``ANSWER: <text>``. Device results come back in a user turn inside ``<tool_response>`` tags,
marked trusted or untrusted. Rendering is deterministic, so a follow-up turn shares its whole
prefix with the previous one and the backend only evaluates what is new.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from importlib import resources

from .devices import Call
from .process import Message

ANSWER_PREFIX = "ANSWER:"
CALL_PREFIX = "CALL"


def boot_prompt_template() -> str:
    return resources.files("llmos.assets").joinpath("boot_prompt.txt").read_text(encoding="utf-8")


# Device texts (names, descriptions, schemas) come from plugins and MCP servers: untrusted. In the
# boot prompt each is one line of plain text, at most this long, inside the <devices> block.
MAX_DEVICE_TEXT = 300
DEVICES_OPEN, DEVICES_CLOSE = "<devices>", "</devices>"

# Anything that reads as structure to the tokenizer or to the prompt: every <|...|> special token
# (ChatML's and any other family's), the result tags and the device list's own tags (and the
# <functions> list of a server client's tools, app/server/tools.py).
_DEVICE_STRUCTURE = re.compile(r"<(\|[^|<>\s]{0,40}\||/?\s*(?:tool_response|tool_call|devices|functions)\b)", re.IGNORECASE)


def device_text(text: object, limit: int = MAX_DEVICE_TEXT) -> str:
    """A plugin's or MCP server's text as it may appear in the boot prompt: one line (newlines and
    other control characters become spaces), no special token or tag, at most ``limit``
    characters (cut with "...")."""
    line = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    line = _DEVICE_STRUCTURE.sub(lambda m: "&lt;" + m.group(1), line)
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def describe_calls(calls: Iterable[tuple[str, Call]]) -> str:
    lines = []
    for name, call in calls:
        args = ", ".join(
            f'"{device_text(arg, 60)}": {device_text(spec.get("type", "value") if isinstance(spec, dict) else "value", 40)}'
            for arg, spec in call.parameters.get("properties", {}).items()
        )
        lines.append(device_text(f"- {name} {{{args}}}: {device_text(call.description)}", 2 * MAX_DEVICE_TEXT))
    return "\n".join(lines) if lines else "- (none)"


def system_message(calls: list[tuple[str, Call]], template: str | None = None) -> Message:
    listing = f"{DEVICES_OPEN}\n{describe_calls(calls)}\n{DEVICES_CLOSE}"
    text = (template or boot_prompt_template()).replace("{devices}", listing)
    return Message("system", text.strip())


def _tool_response(msg: Message) -> str:
    trust = "trusted" if msg.trusted else "untrusted"
    body = _as_text(msg.content) if msg.trusted else html.escape(msg.content, quote=False)
    return f'<tool_response call="{msg.call or ""}" trust="{trust}">\n{body}\n</tool_response>'


# ChatML's control tokens, and the tag device results arrive in: in a user's or the model's own
# text they are text, not structure (a pasted page cannot open a system turn; an answer that
# imitates a device result does not read as one later)
_STRUCTURE = re.compile(r"<(\|[^|<>\s]{0,40}\||/?tool_response)", re.IGNORECASE)
# A system message is the kernel's own (the boot prompt, recalled memories): its template may name
# the tags, but no special token inside it (a remembered text, say) is structure either.
_TOKENS = re.compile(r"<(\|[^|<>\s]{0,40}\|)")


def _as_text(text: str) -> str:
    return _STRUCTURE.sub(lambda m: "&lt;" + m.group(1), text)


as_text = _as_text  # public: app/server renders other programs' messages with it


def render_message(msg: Message) -> str:
    if msg.role == "assistant":
        body = _as_text(msg.content)
        content = f"{CALL_PREFIX} {msg.call} {body}" if msg.call else f"{ANSWER_PREFIX} {body}"
        return f"<|im_start|>assistant\n{content}<|im_end|>\n"
    if msg.role == "tool":
        return f"<|im_start|>user\n{_tool_response(msg)}<|im_end|>\n"
    content = _TOKENS.sub(lambda m: "&lt;" + m.group(1), msg.content) if msg.role == "system" else _as_text(msg.content)
    return f"<|im_start|>{msg.role}\n{content}<|im_end|>\n"


def render(messages: Iterable[Message]) -> str:
    """The conversation so far, ending with the opening of the assistant's next turn."""
    return "".join(render_message(m) for m in messages) + "<|im_start|>assistant\n"
