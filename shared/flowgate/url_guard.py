"""The one guard for outbound URLs that users choose (webhook endpoints, sync remotes, propagation
targets, REST connectors), against SSRF to internal and cloud-metadata addresses.

Two checks, because either alone is not enough (DESIGN §6):

* `check_url` at save time: the URL's syntax, its scheme, no credentials, and every address its host
  names or resolves to must be public (or allow-listed). Hosts are read the way resolvers read them,
  so `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1` or fullwidth digits cannot slip through as
  "names".
* `guarded_session` at send time: a `requests.Session` whose connections resolve the host once, judge
  every address with the same rule and connect to exactly those addresses (no second lookup that a
  rebinding DNS server could answer differently). The hostname still drives the Host header, TLS SNI
  and certificate verification. Redirects to another host, port or to plain http are refused; proxies
  and the environment (`*_PROXY`, `.netrc`) are ignored, since a proxy would resolve for us.

`ipaddress.is_global` alone is not trusted: Python 3.11 calls NAT64 and 6to4 wrappings of the metadata
address, `192.0.0.192` and multicast "global". Addresses that embed an IPv4 address are unwrapped and
the embedded address is judged; the rest go through explicit tables of special-purpose ranges.

Kept import-light (stdlib only at import time): `requests` and `urllib3` load when a session is built.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import SplitResult, urlsplit

from flowgate.errors import BadRequest

if TYPE_CHECKING:
    import requests
    from requests import PreparedRequest
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
MAX_HOST_LENGTH: Final = 253
MAX_REDIRECTS: Final = 5
DEFAULT_TIMEOUT: Final = (5.0, 15.0)  # (connect, read) seconds, when the caller gives none
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class UrlNotAllowed(BadRequest):
    """A URL the guard refuses; a `BadRequest` (400) with code `url_not_allowed`."""

    code = "url_not_allowed"


def _nets(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in rows)


# First match wins, so narrow entries come before the ranges that hold them.
_V4_SPECIAL: Final = _nets(
    ("169.254.169.254/32", "the cloud metadata address"),
    ("0.0.0.0/8", "in 0.0.0.0/8 ('this network')"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "in 192.0.0.0/24 (IETF protocol assignments)"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay anycast address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_V6_SPECIAL: Final = _nets(
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("fd00:ec2::254/128", "the cloud metadata address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("::/8", "a reserved address"),
    ("100::/64", "a discard-only address"),
    ("2001::/23", "in 2001::/23 (IETF protocol assignments)"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("5f00::/16", "an SRv6 segment identifier"),
    ("fc00::/7", "a unique-local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_V6_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_SIIT: Final = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 "IPv4-translated"
_TEREDO: Final = ipaddress.IPv6Network("2001::/32")


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The IPv4 addresses an IPv6 address stands for (mapped, NAT64, SIIT, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", [ip.ipv4_mapped]
    if ip in _NAT64 or ip in _SIIT:
        return "NAT64" if ip in _NAT64 else "IPv4-translated", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return "6to4", [ip.sixtofour]
    if ip in _TEREDO and ip.teredo is not None:
        return "Teredo", list(ip.teredo)
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address (e.g. "a loopback address"), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "an address with a zone id"
        embedded = _embedded_v4(ip)
        if embedded is not None:
            kind, inner = embedded
            for v4 in inner:
                why = non_public_reason(v4)
                if why is not None:
                    return f"the {kind} form of {v4}, {why}"
            return None
    for net, why in _V4_SPECIAL if ip.version == 4 else _V6_SPECIAL:
        if ip in net:
            return why
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _V6_GLOBAL_UNICAST:
        return "not a global unicast address"
    if not ip.is_global or ip.is_multicast:
        return "not a public address"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Where user-chosen URLs may point beyond the public internet, and with which schemes."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    schemes: frozenset[str] = field(default=frozenset({"https", "http"}))
    max_url_length: int = MAX_URL_LENGTH

    @classmethod
    def from_allow_list(
        cls, text: str | None, *, schemes: Iterable[str] = ("https", "http")
    ) -> OutboundPolicy:
        """Parse `OUTBOUND_ALLOW_LIST`: comma-separated IPs, CIDRs or host names (exact match).

        Raises ValueError on an entry it cannot read: a misconfigured allow-list must fail loudly at
        start-up rather than silently allow or refuse.
        """
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in (text or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _normalise_name(entry)
            if name is None or _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
                raise ValueError(f"outbound allow-list entry {entry!r} is not an IP, CIDR or host name")
            hosts.add(name)
        wanted = frozenset(s.lower() for s in schemes)
        if not wanted or not wanted <= {"http", "https"}:
            raise ValueError("outbound schemes must be a non-empty subset of http, https")
        return cls(tuple(networks), frozenset(hosts), wanted)

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # the same host, spelled as IPv6
        return any(c in net for c in candidates for net in self.allowed_networks if c.version == net.version)

    def allow_listed(self, host: str) -> bool:
        """Whether `host` (a name, or an address literal) is on the allow-list itself: where a password or
        a key may also go over plain http (loopback in the local stack)."""
        try:
            return self.allows_address(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return self.allows_host(host)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why this policy refuses to connect to `ip`, or None."""
        return None if self.allows_address(ip) else non_public_reason(ip)


@dataclass(frozen=True)
class ParsedTarget:
    """A URL that passed `check_url`: normalised scheme, ASCII host, effective port, and the addresses
    checked (empty for an allow-listed host name, or when not resolved)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _refuse(message: str) -> UrlNotAllowed:
    return UrlNotAllowed(message, code="url_not_allowed")


def _normalise_name(host: str) -> str | None:
    """A host name in lower-case ASCII (IDNA), or None if it is not a valid name.

    IDNA maps fullwidth digits and dots to ASCII, which is what a resolver would see, so IP-literal
    detection runs on this form.
    """
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    bare = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    if not bare or len(bare) > MAX_HOST_LENGTH:
        return None
    if not all(_LABEL.match(label) for label in bare.split(".")):
        return None
    return bare


def _parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """Read `host` the way `inet_aton` (and so `getaddrinfo`) does: 1 to 4 parts, each decimal,
    octal (leading 0) or hex (0x); the last part fills the remaining bytes. None if invalid."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
            values.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]*", part):
            values.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _literal_address(netloc_host: str, hostname: str) -> IPAddress | None:
    """The address if the URL's host is an IP literal in any spelling a resolver accepts; raises
    UrlNotAllowed for a malformed literal. None for a host name."""
    if netloc_host.startswith("["):
        if "%" in hostname:
            raise _refuse("IPv6 zone ids are not accepted in outbound URLs")
        try:
            return ipaddress.IPv6Address(hostname)
        except ValueError:
            raise _refuse("the URL's host is not a valid IPv6 address") from None
    last_label = hostname.rstrip(".").rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.match(last_label):  # a host ending in a number is an IPv4 address (WHATWG URL)
        address = _parse_inet_aton(hostname.rstrip("."))
        if address is None:
            raise _refuse(f"the host {hostname!r} is neither a valid IPv4 address nor a host name")
        return address
    return None


def _split(url: str, policy: OutboundPolicy) -> tuple[SplitResult, str, str, int]:
    if not url:
        raise _refuse("the URL is empty")
    if len(url) > policy.max_url_length:
        raise _refuse(f"the URL is longer than {policy.max_url_length} characters")
    if _FORBIDDEN_CHARS.search(url):
        raise _refuse("the URL must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("the URL cannot be parsed (bad host or port)") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise _refuse("not an absolute URL (expected scheme://host/...)")
    if scheme not in policy.schemes:
        allowed = ", ".join(sorted(policy.schemes))
        raise _refuse(f"the scheme {scheme!r} is not allowed (use {allowed})")
    if "@" in parts.netloc:
        raise _refuse("the URL must not contain credentials (user:password@host)")
    hostname = parts.hostname or ""
    if not hostname:
        raise _refuse("the URL has no host")
    if port == 0:
        raise _refuse("the URL's port must be between 1 and 65535")
    return parts, scheme, hostname, port or _DEFAULT_PORTS[scheme]


def resolve_checked(host: str, port: int, policy: OutboundPolicy) -> list[tuple[Any, ...]]:
    """`getaddrinfo` for a TCP connection to `host`, refusing if any address is not allowed.

    Returns the `getaddrinfo` rows, to connect to exactly what was judged. Raises `socket.gaierror`
    when the name does not resolve, UrlNotAllowed when an address is refused.
    """
    rows = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    if not policy.allows_host(host):
        for row in rows:
            ip = ipaddress.ip_address(str(row[4][0]).split("%", 1)[0])
            why = policy.refusal(ip)
            if why is not None:
                shown = f"{host!r} resolves to {ip}, which is" if str(ip) != host else f"{ip} is"
                raise _refuse(f"{shown} {why}; outbound URLs must point at public addresses")
    return list(rows)


def check_url(url: str, policy: OutboundPolicy, *, resolve: bool = True) -> ParsedTarget:
    """Validate a user-chosen outbound URL (at save time) and return its parts.

    Raises UrlNotAllowed (`BadRequest`, code `url_not_allowed`) naming the host or address and the
    reason, never the URL's credentials. With `resolve=False` host names are checked for syntax only
    (the connect-time check of `guarded_session` judges their addresses).
    """
    parts, scheme, hostname, port = _split(url, policy)
    literal = _literal_address(parts.netloc, hostname)
    if literal is not None:
        why = policy.refusal(literal)
        if why is not None:
            shown = f"{literal}" if hostname == str(literal) else f"{hostname!r} ({literal})"
            raise _refuse(f"the host {shown} is {why}; outbound URLs must point at public addresses")
        return ParsedTarget(url, scheme, str(literal), port, (literal,))
    name = _normalise_name(hostname)
    if name is None:
        raise _refuse(f"the host {hostname!r} is not a valid host name")
    literal = _literal_address(name, name)  # IDNA may turn fullwidth digits into an IPv4 literal
    if literal is not None:
        why = policy.refusal(literal)
        if why is not None:
            raise _refuse(f"the host {hostname!r} is the address {literal}, {why}")
        return ParsedTarget(url, scheme, str(literal), port, (literal,))
    if not resolve or policy.allows_host(name):
        return ParsedTarget(url, scheme, name, port, ())
    try:
        rows = resolve_checked(name, port, policy)
    except socket.gaierror:
        raise _refuse(f"the host {name!r} does not resolve") from None
    addresses = tuple(dict.fromkeys(ipaddress.ip_address(str(r[4][0]).split("%", 1)[0]) for r in rows))
    return ParsedTarget(url, scheme, name, port, addresses)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").rstrip("."), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def check_redirect(from_url: str, to_url: str) -> None:
    """Refuse a redirect to another host or port, or from https to http. http -> https on the same
    host (default ports) is an upgrade and allowed."""
    old, new = _origin(from_url), _origin(to_url)
    if old[1] != new[1]:
        raise _refuse(f"a redirect from {old[1]!r} to another host ({new[1]!r}) is not followed")
    if old != new and not (old[0], old[2], new[0], new[2]) == ("http", 80, "https", 443):
        raise _refuse(f"a redirect on {old[1]!r} to another port or to a weaker scheme is not followed")


# ---- the requests transport (imports requests/urllib3 lazily) ---------------------------------------


def _connect(conn: HTTPConnection, policy: OutboundPolicy) -> socket.socket:
    """urllib3's `_new_conn`, but connecting only to addresses the policy accepts."""
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    host = conn._dns_host.strip("[]")
    try:
        rows = resolve_checked(host, conn.port or 0, policy)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    error: OSError | None = None
    for family, socktype, proto, _canon, sockaddr in rows:
        sock = socket.socket(family, socktype, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        return sock
    if isinstance(error, TimeoutError):
        message = f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        raise ConnectTimeoutError(conn, message) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


def _pool_classes(policy: OutboundPolicy) -> dict[str, Any]:
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect(self, policy)

    class GuardedHTTPSConnection(HTTPSConnection):  # TLS wraps this socket with SNI = the hostname
        def _new_conn(self) -> socket.socket:
            return _connect(self, policy)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


@functools.cache
def _session_classes() -> tuple[type[requests.Session], Callable[[OutboundPolicy], HTTPAdapter]]:
    import requests
    from requests.adapters import HTTPAdapter

    class GuardedAdapter(HTTPAdapter):
        def __init__(self, policy: OutboundPolicy) -> None:
            self.policy = policy  # before super().__init__, which builds the pool manager
            super().__init__()

        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kw: Any) -> None:
            super().init_poolmanager(connections, maxsize, block, **kw)
            self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)

        def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
            check_url(request.url or "", self.policy, resolve=False)
            kwargs["proxies"] = None  # a proxy would resolve and connect for us, unchecked
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = DEFAULT_TIMEOUT
            return super().send(request, *args, **kwargs)

        def proxy_manager_for(self, proxy: str, **kw: Any) -> Any:
            raise _refuse("outbound requests do not go through proxies")

    class GuardedSession(requests.Session):
        def rebuild_auth(self, prepared_request: PreparedRequest, response: requests.Response) -> None:
            check_redirect(response.request.url or "", prepared_request.url or "")
            super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]

    return GuardedSession, GuardedAdapter


def guarded_session(policy: OutboundPolicy) -> requests.Session:
    """A `requests.Session` for user-chosen URLs: every connection is checked against `policy` after
    resolution; redirects stay on the same host and port (at most MAX_REDIRECTS); no proxies, no
    `.netrc`, and a default timeout. Requests raise UrlNotAllowed when refused."""
    session_cls, adapter_cls = _session_classes()
    session = session_cls()
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    adapter = adapter_cls(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
