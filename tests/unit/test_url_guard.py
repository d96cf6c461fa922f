"""The outbound-URL guard: save-time checks, address classification, and the connect-time transport.

No DNS and no network beyond loopback: `socket.getaddrinfo` is replaced by a table of names (IP
literals are still resolved, numerically only), and the HTTP(S) servers listen on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from flowgate.errors import BadRequest
from flowgate.url_guard import (
    MAX_REDIRECTS,
    OutboundPolicy,
    UrlNotAllowed,
    check_url,
    guarded_session,
    non_public_reason,
)

PUBLIC = OutboundPolicy.from_allow_list("")
LOCAL = OutboundPolicy.from_allow_list("127.0.0.0/8,::1")  # what the local stack sets

_real_getaddrinfo = socket.getaddrinfo


# ---- a fake resolver ---------------------------------------------------------------------------------


class FakeDNS:
    """Answers names from `table` (a list of answers per name: one per call, the last repeats);
    IP literals resolve numerically; anything else fails like an unknown name."""

    def __init__(self) -> None:
        self.table: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def __call__(self, host: Any, port: Any, family: int = 0, kind: int = 0, *_: int) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.calls.append(name)
        answers = self.table.get(name.rstrip(".").lower())
        if answers is None:
            return _real_getaddrinfo(host, port, family, kind, 0, socket.AI_NUMERICHOST)
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        rows: list[Any] = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if ip.version == 6:
                rows.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0)))
            else:
                rows.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0))))
        return rows


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


# ---- save-time checks ---------------------------------------------------------------------------------

REFUSED = [
    # IPv4 loopback in every spelling a resolver accepts
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/", "loopback"),  # fullwidth digits
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
    ("http://[::ffff:7f00:1]:8080/", "IPv4-mapped"),
    # cloud metadata, plain and wrapped
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://2852039166/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64"),
    ("http://[64:ff9b::169.254.169.254]/", "NAT64"),
    ("http://[2002:a9fe:a9fe::1]/", "6to4"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    # other non-public ranges
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://169.254.1.1/", "link-local"),
    ("http://0.0.0.0/", "0.0.0.0/8"),
    ("http://0/", "0.0.0.0/8"),
    ("http://192.0.0.192/", "192.0.0.0/24"),
    ("http://192.0.2.1/", "documentation"),
    ("http://198.51.100.7/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[64:ff9b::10.0.0.1]/", "NAT64"),
    # zone ids, malformed literals and hosts
    ("http://[fe80::1%25eth0]/", "zone id"),
    ("http://[2606:4700::1%25eth0]/", "zone id"),
    ("http://1.2.3.4.5/", "neither a valid IPv4"),
    ("http://256.0.0.1/", "neither a valid IPv4"),
    ("http://08.0.0.1/", "neither a valid IPv4"),
    ("http://%31%32%37.0.0.1/", "IPv4"),
    ("http://exa_mple!.com/", "not a valid host name"),
    # credentials, schemes, shape
    ("http://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("http://example.com\\@127.0.0.1/", "backslash"),
    ("http://93.184.216.34 /", "spaces"),
    ("ftp://example.com/file", "'ftp'"),
    ("file:///etc/passwd", "'file'"),
    ("gopher://example.com:70/_GET", "'gopher'"),
    ("javascript:alert(1)", "'javascript'"),
    ("http:///path", "no host"),
    ("http://:80/", "no host"),
    ("//example.com/", "not an absolute URL"),
    ("example.com", "not an absolute URL"),
    ("", "empty"),
    ("http://example.com:0/", "port"),
    ("http://example.com:99999/", "port"),
    ("https://example.com/" + "a" * 3000, "longer than"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_urls(url: str, reason: str, dns: FakeDNS) -> None:
    with pytest.raises(UrlNotAllowed) as info:
        check_url(url, PUBLIC)
    err = info.value
    assert isinstance(err, BadRequest)
    assert err.status == 400
    assert err.code == "url_not_allowed"
    assert reason in err.message
    assert dns.calls == []  # literals and malformed URLs are judged without any lookup


def test_refusal_never_echoes_credentials() -> None:
    with pytest.raises(UrlNotAllowed) as info:
        check_url("https://admin:hunter2@169.254.169.254/", PUBLIC)
    assert "hunter2" not in info.value.message
    assert "admin" not in info.value.message


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://93.184.216.34/", "93.184.216.34", 80),
        ("https://93.184.216.34:8443/hook?x=1", "93.184.216.34", 8443),
        ("HTTPS://[2606:4700:4700::1111]/", "2606:4700:4700::1111", 443),
        ("http://[2002:5db8:d822::1]/", "2002:5db8:d822::1", 80),  # 6to4 of a public address
    ],
)
def test_accepted_public_literals(url: str, host: str, port: int, dns: FakeDNS) -> None:
    target = check_url(url, PUBLIC)
    assert (target.host, target.port) == (host, port)
    assert target.scheme in {"http", "https"}
    assert [str(a) for a in target.addresses] == [host]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:3000/hook", "http://127.1:3000/", "http://[::1]:3000/", "http://[::ffff:127.0.0.1]/"],
)
def test_local_policy_allows_loopback(url: str, dns: FakeDNS) -> None:
    assert check_url(url, LOCAL).addresses
    with pytest.raises(UrlNotAllowed):
        check_url(url, PUBLIC)


def test_local_policy_still_refuses_metadata_and_private() -> None:
    for url in ("http://169.254.169.254/", "http://10.0.0.1/", "http://[64:ff9b::7f00:1]/"):
        with pytest.raises(UrlNotAllowed):
            check_url(url, LOCAL)


def test_https_only_policy() -> None:
    policy = OutboundPolicy.from_allow_list("", schemes=["https"])
    assert check_url("https://93.184.216.34/", policy).port == 443
    with pytest.raises(UrlNotAllowed, match="'http' is not allowed"):
        check_url("http://93.184.216.34/", policy)


# ---- host names ------------------------------------------------------------------------------------


def test_name_resolving_to_public_addresses_is_accepted(dns: FakeDNS) -> None:
    dns.table["hooks.example.com"] = [["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]]
    target = check_url("https://Hooks.Example.COM./in", PUBLIC)
    assert target.host == "hooks.example.com"
    assert [str(a) for a in target.addresses] == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


def test_name_resolving_to_public_and_private_is_refused(dns: FakeDNS) -> None:
    dns.table["mixed.example.com"] = [["93.184.216.34", "10.1.2.3"]]
    with pytest.raises(UrlNotAllowed, match=r"'mixed.example.com' resolves to 10.1.2.3, which is a private"):
        check_url("https://mixed.example.com/", PUBLIC)


def test_name_resolving_to_wrapped_metadata_is_refused(dns: FakeDNS) -> None:
    dns.table["sneaky.example.com"] = [["64:ff9b::a9fe:a9fe"]]
    with pytest.raises(UrlNotAllowed, match=r"NAT64 form of 169\.254\.169\.254"):
        check_url("https://sneaky.example.com/", PUBLIC)


def test_unresolvable_name_is_refused(dns: FakeDNS) -> None:
    with pytest.raises(UrlNotAllowed, match="does not resolve"):
        check_url("https://nowhere.invalid/", PUBLIC)


def test_idn_host_is_checked_in_its_ascii_form(dns: FakeDNS) -> None:
    dns.table["xn--bcher-kva.example"] = [["93.184.216.34"]]
    assert check_url("https://bücher.example/", PUBLIC).host == "xn--bcher-kva.example"


def test_allow_listed_host_name_is_not_resolved(dns: FakeDNS) -> None:
    policy = OutboundPolicy.from_allow_list("internal.service")
    assert check_url("http://internal.service:8080/", policy).addresses == ()
    assert dns.calls == []


def test_check_without_resolution_checks_syntax_only(dns: FakeDNS) -> None:
    assert check_url("https://later.example.com/", PUBLIC, resolve=False).addresses == ()
    assert dns.calls == []


# ---- policy and classification -----------------------------------------------------------------------


def test_allow_list_parsing() -> None:
    policy = OutboundPolicy.from_allow_list(" 127.0.0.0/8, ::1 ,[fd00::1], 10.1.2.3, Internal.Service. ,")
    assert [str(n) for n in policy.allowed_networks] == [
        "127.0.0.0/8",
        "::1/128",
        "fd00::1/128",
        "10.1.2.3/32",
    ]
    assert policy.allowed_hosts == frozenset({"internal.service"})
    assert OutboundPolicy.from_allow_list(None) == OutboundPolicy.from_allow_list("")


@pytest.mark.parametrize("entry", ["*.example.com", "host:8080", "10.0.0.0/33", "1.2.3.4.5", "http://x"])
def test_allow_list_rejects_unreadable_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        OutboundPolicy.from_allow_list(entry)


def test_policy_schemes_must_be_http_or_https() -> None:
    with pytest.raises(ValueError, match="schemes"):
        OutboundPolicy.from_allow_list("", schemes=["ftp"])


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b::a9fe:a9fe", False),
        ("2002:a9fe:a9fe::1", False),
        ("2002:808:808::1", True),
        ("::ffff:10.0.0.1", False),
        ("::127.0.0.1", False),  # deprecated IPv4-compatible
        ("64:ff9b:1::1", False),
        ("192.0.0.192", False),
        ("224.0.0.251", False),
        ("198.18.0.1", False),
        ("4000::1", False),  # outside 2000::/3
    ],
)
def test_public_classification(address: str, public: bool) -> None:
    assert (non_public_reason(ipaddress.ip_address(address)) is None) is public


# ---- the transport: loopback servers ---------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        server: Any = self.server
        server.hits.append(self.path)
        port = server.server_address[1]
        redirects = {
            "/same": "/ok",
            "/same-absolute": f"http://127.0.0.1:{port}/ok",
            "/other-host": f"http://localhost:{port}/ok",
            "/other-port": f"http://127.0.0.1:{server.other_port}/ok",
            "/metadata": "http://169.254.169.254/latest/meta-data/",
            "/loop": "/loop",
        }
        if self.path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    servers: list[ThreadingHTTPServer] = []

    def start(tls: ssl.SSLContext | None = None) -> Any:
        server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.hits = []
        server.other_port = 1
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_loopback_server_reachable_only_with_the_allow_list(serve: Callable[..., Any]) -> None:
    server = serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/ok"
    with guarded_session(LOCAL) as session:
        response = session.get(url)
    assert response.status_code == 200
    with guarded_session(PUBLIC) as session, pytest.raises(UrlNotAllowed, match="loopback"):
        session.get(url)
    assert server.hits == ["/ok"]


def test_connect_time_check_defeats_dns_rebinding(serve: Callable[..., Any], dns: FakeDNS) -> None:
    server = serve()
    port = server.server_address[1]
    dns.table["rebind.example.com"] = [["93.184.216.34"], ["127.0.0.1"]]  # public first, then loopback
    url = f"http://rebind.example.com:{port}/ok"
    assert check_url(url, PUBLIC).addresses == (ipaddress.ip_address("93.184.216.34"),)
    with guarded_session(PUBLIC) as session, pytest.raises(UrlNotAllowed, match=r"resolves to 127\.0\.0\.1"):
        session.get(url)
    assert server.hits == []
    assert dns.calls == ["rebind.example.com", "rebind.example.com"]


def test_connection_goes_to_the_checked_address_with_the_original_host_header(
    serve: Callable[..., Any], dns: FakeDNS
) -> None:
    server = serve()
    port = server.server_address[1]
    dns.table["service.test"] = [["127.0.0.1"], ["10.9.9.9"]]  # a second lookup would be refused
    with guarded_session(LOCAL) as session:
        response = session.get(f"http://service.test:{port}/ok")
    assert response.text == f"host=service.test:{port}"
    assert dns.calls == ["service.test"]


def test_environment_proxies_and_explicit_proxies_are_ignored(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    url = f"http://127.0.0.1:{server.server_address[1]}/ok"
    with guarded_session(LOCAL) as session:
        assert session.get(url).status_code == 200
        assert session.get(url, proxies={"http": "http://127.0.0.1:9"}).status_code == 200


@pytest.mark.parametrize("path", ["/same", "/same-absolute"])
def test_same_host_redirect_is_followed(serve: Callable[..., Any], path: str) -> None:
    server = serve()
    with guarded_session(LOCAL) as session:
        response = session.get(f"http://127.0.0.1:{server.server_address[1]}{path}")
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [302]
    assert server.hits == [path, "/ok"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/other-host", "another host"), ("/other-port", "another port"), ("/metadata", "another host")],
)
def test_redirect_off_the_host_is_refused(serve: Callable[..., Any], path: str, reason: str) -> None:
    server = serve()
    with guarded_session(LOCAL) as session, pytest.raises(UrlNotAllowed, match=reason):
        session.get(f"http://127.0.0.1:{server.server_address[1]}{path}")
    assert server.hits == [path]


def test_redirect_loops_stop_early(serve: Callable[..., Any]) -> None:
    server = serve()
    with guarded_session(LOCAL) as session, pytest.raises(requests.TooManyRedirects):
        session.get(f"http://127.0.0.1:{server.server_address[1]}/loop")
    assert len(server.hits) == 1 + MAX_REDIRECTS


def test_session_refuses_a_bad_url_before_connecting(dns: FakeDNS) -> None:
    with guarded_session(PUBLIC) as session, pytest.raises(UrlNotAllowed, match="credentials"):
        session.get("http://user:pw@93.184.216.34/")
    assert dns.calls == []


# ---- TLS: SNI and certificate verification use the host name, not the address ---------------------------


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_uses_the_host_name_for_sni_and_verification(
    serve: Callable[..., Any], dns: FakeDNS, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path, "secure.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)
    server = serve(tls=context)
    port = server.server_address[1]
    dns.table["secure.test"] = [["127.0.0.1"]]
    dns.table["other.test"] = [["127.0.0.1"]]
    with guarded_session(LOCAL) as session:
        response = session.get(f"https://secure.test:{port}/ok", verify=str(cert))
        assert response.text == f"host=secure.test:{port}"
        with pytest.raises(requests.exceptions.SSLError):  # the certificate names secure.test only
            session.get(f"https://other.test:{port}/ok", verify=str(cert))
    assert seen_sni[:2] == ["secure.test", "other.test"]
