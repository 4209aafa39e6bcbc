"""The browser device: fetch a web page (http/https only), read its text, find and quote in it.

No JavaScript runs: the page's HTML is fetched with a size limit and a time limit and its readable
text extracted with trafilatura (or a plain tag-stripper when trafilatura finds nothing). Each
process's last opened page is kept (by pid, in this device instance's state) so that its ``find``
and ``quote`` work on it; another process, or another kernel, never sees it. Everything returned is
marked :class:`Untrusted` with the page's address as its source.

Which addresses it may reach is :mod:`.address`'s policy: public addresses and loopback yes,
private networks and link-local addresses no (unless allowed), checked on the address actually
connected to, for redirects and DNS names too.

Settings (``[devices.browser]`` in the config): ``search_url`` (a template with ``{query}``; its
host is always allowed), ``timeout_s``, ``max_bytes``, ``allow_loopback`` (default true),
``allow_private`` (default false).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Annotated, Any

from llmos.kernel.devices import CallContext, Device, DeviceContext, DeviceError, Example, Untrusted

from .address import AddressPolicy, BlockedAddress, guarded_handlers
from .extract import extract_links, extract_text

log = logging.getLogger(__name__)

MAX_BYTES = 2 * 1024 * 1024
TIMEOUT_S = 10.0
PREVIEW_CHARS = 5_000
MAX_QUOTE_CHARS = 5_000
MAX_MATCHES = 20
CONTEXT_CHARS = 80
MAX_OPEN_PAGES = 64  # processes whose open page is kept; the longest unused go first
_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "application/xml", "text/xml")

device = Device(
    "browser",
    version="1.0.0",
    description="Read web pages: open a URL and get its text, find words in it, quote parts, search the web.",
    permissions=["network"],
)


@dataclass
class Page:
    url: str
    title: str
    text: str
    truncated: bool
    html: str = ""


@dataclass
class Browser:
    """One device instance: its settings, and each process's open page (by pid)."""

    settings: dict[str, Any] = field(default_factory=dict)
    pages: dict[int | None, Page] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, pid: int | None, page: Page) -> None:
        with self.lock:
            self.pages.pop(pid, None)
            self.pages[pid] = page
            while len(self.pages) > MAX_OPEN_PAGES:
                del self.pages[next(iter(self.pages))]

    def current(self, pid: int | None) -> Page:
        with self.lock:
            page = self.pages.get(pid)
        if page is None:
            raise DeviceError("no page is open: call browser.open first")
        return page


@device.setup
def _setup(context: DeviceContext) -> Browser:
    return Browser(dict(context.settings))


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http/https addresses."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _check_url(urllib.parse.urljoin(req.full_url, newurl))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise DeviceError(f"only http and https addresses can be opened, not {parts.scheme or 'this'!r}: {url[:200]}")
    if not parts.hostname:
        raise DeviceError(f"the address has no host: {url[:200]}")
    return url.strip()


def _flag(settings: dict[str, Any], name: str, default: bool) -> bool:
    value = settings.get(name, default)
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def _address_policy(settings: dict[str, Any]) -> AddressPolicy:
    template = str(settings.get("search_url") or "")
    host = urllib.parse.urlsplit(template.replace("{query}", "q")).hostname if template else None
    return AddressPolicy(allow_loopback=_flag(settings, "allow_loopback", True),
                         allow_private=_flag(settings, "allow_private", False),
                         trusted_hosts=frozenset({host.lower()} if host else ()))


def _fetch(url: str, settings: dict[str, Any]) -> tuple[bytes, str, str, bool]:
    """(body, final url, content type with charset, truncated); a DeviceError for every failure."""
    timeout = float(settings.get("timeout_s", TIMEOUT_S))
    limit = int(settings.get("max_bytes", MAX_BYTES))
    opener = urllib.request.build_opener(*guarded_handlers(_address_policy(settings)), _SafeRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "llmos-browser/1.0 (no JavaScript)",
                                                   "Accept": "text/html,text/plain;q=0.9,*/*;q=0.1"})
    # One deadline for the whole fetch: the socket timeout bounds each read, the loop the total.
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            content_type = response.headers.get("Content-Type", "text/html")
            mime = content_type.split(";")[0].strip().lower()
            if mime and mime not in _TEXT_TYPES:
                raise DeviceError(f"{url} is {mime}, not a web page")
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                if time.monotonic() > deadline:
                    raise DeviceError(f"{url} did not load within {timeout:g} s")
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            body = b"".join(chunks)
            return body[:limit], response.geturl(), content_type, size > limit
    except DeviceError:
        raise
    except urllib.error.HTTPError as exc:
        raise DeviceError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, BlockedAddress):
            raise DeviceError(str(reason)) from None
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise DeviceError(f"{url} did not load within {timeout:g} s") from None
        raise DeviceError(f"could not open {url}: {reason}") from None
    except TimeoutError:
        raise DeviceError(f"{url} did not load within {timeout:g} s") from None
    except BlockedAddress as exc:  # raised while reading a redirect's target
        raise DeviceError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise DeviceError(f"could not open {url}: {exc}") from None


def _load(url: str, context: CallContext) -> Page:
    """Fetch and read ``url``; it becomes the calling process's open page unless the call was
    cancelled meanwhile (a timed-out open leaves the page before it open)."""
    browser = context.state_as(Browser)
    body, final_url, content_type, truncated = _fetch(_check_url(url), browser.settings)
    charset = "utf-8"
    if "charset=" in content_type:
        charset = content_type.split("charset=", 1)[1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        html = body.decode(charset, errors="replace")
    except LookupError:
        html = body.decode("utf-8", errors="replace")
    if content_type.lower().startswith("text/plain"):
        title, text = "", html
    else:
        title, text = extract_text(html, final_url)
    log.info("browser opened %s (%d bytes, %d characters of text%s)", final_url, len(body), len(text),
             ", truncated" if truncated else "")
    page = Page(final_url, title, text, truncated, html)
    with context.commit():
        browser.keep(context.pid, page)
    return page


def _page_view(page: Page) -> dict[str, Any]:
    view: dict[str, Any] = {"url": page.url, "title": page.title, "length": len(page.text),
                            "truncated": page.truncated, "text": page.text[:PREVIEW_CHARS]}
    if len(page.text) > PREVIEW_CHARS:
        view["more"] = f"showing characters 0-{PREVIEW_CHARS} of {len(page.text)}: use browser.quote or browser.find"
    return view


def _search_destinations(arguments: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    template = str(settings.get("search_url") or "")
    return [template.replace("{query}", "q")] if "{query}" in template else []


@device.call(examples=[Example("Open https://example.com and tell me what it says", {"url": "https://example.com"})],
             timeout_s=TIMEOUT_S + 20, destinations=lambda arguments: [arguments["url"]])
def open(url: str, context: CallContext) -> Untrusted:
    """Fetch a web page (http or https) and return its title and readable text.

    Args:
        url: The address, starting with http:// or https://.
    """
    page = _load(url, context)
    return Untrusted(_page_view(page), source=page.url)


@device.call(examples=[Example("Find 'price' on the open page", {"text": "price"})], timeout_s=10.0,
             destinations=lambda arguments: [])
def find(text: str, context: CallContext) -> Untrusted:
    """Find a word or phrase in the open page's text (case-insensitive), with context around each match.

    Args:
        text: The word or phrase to look for.
    """
    if not text.strip():
        raise DeviceError("what text should I look for?")
    page = context.state_as(Browser).current(context.pid)
    haystack, needle = page.text.lower(), text.lower()
    matches: list[dict[str, Any]] = []
    total, position = 0, haystack.find(needle)
    while position != -1:
        total += 1
        if len(matches) < MAX_MATCHES:
            end = position + len(needle)
            context = page.text[max(0, position - CONTEXT_CHARS):end + CONTEXT_CHARS]
            matches.append({"start": position, "end": end, "context": context})
        position = haystack.find(needle, position + max(1, len(needle)))
    return Untrusted({"url": page.url, "text": text, "count": total, "matches": matches}, source=page.url)


@device.call(examples=[Example("Quote characters 100 to 400 of the page", {"start": 100, "end": 400})],
             timeout_s=10.0, destinations=lambda arguments: [])
def quote(start: Annotated[int, {"minimum": 0}], end: Annotated[int, {"minimum": 0}],
          context: CallContext) -> Untrusted:
    """The open page's text from character start to character end (at most 5,000 characters).

    Args:
        start: First character (0-based).
        end: One past the last character.
    """
    page = context.state_as(Browser).current(context.pid)
    if end <= start:
        raise DeviceError(f"end ({end}) must be after start ({start})")
    if start >= len(page.text):
        raise DeviceError(f"the page has only {len(page.text)} characters")
    end = min(end, start + MAX_QUOTE_CHARS, len(page.text))
    return Untrusted({"url": page.url, "start": start, "end": end, "text": page.text[start:end]}, source=page.url)


@device.call(examples=[Example("Search the web for llama.cpp quantization", {"query": "llama.cpp quantization"})],
             timeout_s=TIMEOUT_S + 20, destinations=_search_destinations)
def search(query: str, context: CallContext) -> Untrusted:
    """Search the web with the configured search page; returns its text and result links.

    Args:
        query: What to search for.
    """
    template = context.state_as(Browser).settings.get("search_url")
    if not template or "{query}" not in str(template):
        raise DeviceError("web search is not configured: set devices.browser.search_url to a search address "
                          "with {query} in it (e.g. a local SearXNG: http://127.0.0.1:8888/search?q={query})")
    if not query.strip():
        raise DeviceError("what should I search for?")
    page = _load(str(template).replace("{query}", urllib.parse.quote_plus(query)), context)
    view = _page_view(page)
    view["text"] = view["text"][:2_000]
    view["links"] = extract_links(page.html, page.url)[:20]
    return Untrusted(view, source=page.url)
