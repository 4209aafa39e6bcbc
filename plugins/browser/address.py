"""Which network addresses the browser may connect to, checked on the address actually used.

The policy (settings ``allow_loopback``, default true, and ``allow_private``, default false):

- public (globally routable) addresses: allowed;
- loopback (127.0.0.0/8, ::1): allowed by default, because pages and services on the user's own
  machine (a local dev server, a local search engine) are a normal thing to read;
- private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) and link-local addresses
  (169.254/16, where cloud metadata lives at 169.254.169.254; fe80::/10): refused unless
  ``allow_private``, so a page cannot steer the browser at the LAN's routers and admin pages;
- unspecified (0.0.0.0, ::), multicast and reserved addresses: always refused.

The check runs inside the connection: the host name is resolved once, every address it resolves
to is checked, and the socket connects to a checked address. So a literal address, a redirect, a
DNS name that points at a private address, and a name that resolves differently on a second
look-up (DNS rebinding) all meet the same rule. Proxies from the environment are not used (the
address checked is the address connected to).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import urllib.request
from dataclasses import dataclass, field
from typing import Any


class BlockedAddress(OSError):
    """A connection the address policy refuses; its message says why and how to allow it."""


@dataclass(frozen=True)
class AddressPolicy:
    allow_loopback: bool = True
    allow_private: bool = False
    trusted_hosts: frozenset[str] = field(default_factory=frozenset)  # configured by the user

    def refusal(self, ip: str) -> str | None:
        """Why ``ip`` may not be contacted, or None when it may."""
        address = ipaddress.ip_address(ip.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return None if self.allow_loopback else "a loopback address (set devices.browser.allow_loopback = true)"
        if address.is_unspecified or address.is_multicast:
            return "not an address a web page can live at"
        if address.is_global:
            return None
        if address.is_link_local:
            kind = "a link-local address"
        elif address.is_private or address in ipaddress.ip_network("100.64.0.0/10"):
            kind = "a private-network address"
        else:
            return "a reserved address"
        return None if self.allow_private else f"{kind} (set devices.browser.allow_private = true to allow)"

    def connect(self, address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """``socket.create_connection`` that connects only to addresses this policy allows."""
        host, port = address
        trusted = host.lower().rstrip(".") in self.trusted_hosts
        refused: list[str] = []
        last_error: OSError | None = None
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            why = None if trusted else self.refusal(str(sockaddr[0]))
            if why is not None:
                refused.append(f"{sockaddr[0]} is {why}")
                continue
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last_error = exc
        if last_error is not None:
            raise last_error
        raise BlockedAddress(f"refused to connect to {host}: {'; '.join(refused) or 'no address'}")


class _GuardedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = policy.connect  # what HTTPConnection.connect uses


class _GuardedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = policy.connect  # HTTPSConnection.connect wraps it in TLS


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_GuardedHTTP, policy=self.policy), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_GuardedHTTPS, policy=self.policy), req,
                            context=getattr(self, "_context", None))


def guarded_handlers(policy: AddressPolicy) -> list[urllib.request.BaseHandler]:
    """Handlers for ``urllib.request.build_opener``: no environment proxies, guarded connections."""
    return [urllib.request.ProxyHandler({}), _HTTPHandler(policy), _HTTPSHandler(policy)]
