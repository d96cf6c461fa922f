"""The GIT connector type: `metadata` of a local repository built here with dulwich, the same over a local
https smart-HTTP server (through the outbound guard), and the transports and refs it must refuse."""

from __future__ import annotations

import datetime
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from flowgate.connectors import registry
from flowgate.connectors.runtime import ConnectorError, RunContext
from flowgate.errors import BadRequest
from flowgate.url_guard import OutboundPolicy

LOCAL = RunContext(outbound_policy=OutboundPolicy.from_allow_list("127.0.0.0/8,::1"), allow_local_git=True)
PRODUCTION = RunContext()

ANN = b"Ann Author <ann@example.com>"
BOB = b"Bob Builder <bob@example.com>"
FIRST_TIME, FIRST_TZ = 1_700_000_000, 3600  # 2023-11-14T22:13:20Z, written at +01:00
SECOND_TIME, SECOND_TZ = 1_710_000_000, -5 * 3600  # 2024-03-09T16:00:00Z, written at -05:00


@dataclass(frozen=True)
class Sample:
    path: Path
    first: str  # on develop, tagged v2
    second: str  # main's HEAD


def _commit(repo: Any, path: Path, *, content: str, message: bytes, author: bytes, when: int, tz: int) -> str:
    from dulwich import porcelain

    (path / "README").write_text(content)
    porcelain.add(repo, [str(path / "README")])
    sha: bytes = porcelain.commit(
        repo,
        message=message,
        author=author,
        committer=author,
        author_timestamp=when,
        author_timezone=tz,
        commit_timestamp=when,
        commit_timezone=tz,
        no_verify=True,
    )
    return sha.decode()


def build_sample(path: Path) -> Sample:
    """Two commits: the first on `develop` and tagged `v2` (annotated), the second on the default branch."""
    from dulwich import porcelain
    from dulwich.objects import ObjectID
    from dulwich.refs import Ref
    from dulwich.repo import Repo

    repo = Repo.init(str(path))
    with repo:
        first = _commit(
            repo,
            path,
            content="one",
            message=b"First commit\n\nWith a body.\n",
            author=ANN,
            when=FIRST_TIME,
            tz=FIRST_TZ,
        )
        repo.refs[Ref(b"refs/heads/develop")] = ObjectID(first.encode())
        second = _commit(
            repo, path, content="two", message=b"Second commit\n", author=BOB, when=SECOND_TIME, tz=SECOND_TZ
        )
        porcelain.tag_create(repo, "v2", author=ANN, message=b"release 2", annotated=True, objectish=first)
        porcelain.tag_create(repo, "light", objectish=second)
    return Sample(path, first, second)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return build_sample(tmp_path_factory.mktemp("repo"))


def metadata(url: str, ctx: RunContext = LOCAL, **inputs: Any) -> dict[str, Any]:
    spec = registry.get_type("GIT")
    model = registry.validate_full(spec, {"repository_url": url, "command": "metadata", **inputs}, ctx)
    return spec.run(model, ctx)


# ---- local repositories ------------------------------------------------------------------------------------


def test_head_is_the_latest_commit_of_the_default_branch(sample: Sample) -> None:
    out = metadata(str(sample.path))
    assert out == {
        "commit_id": sample.second,
        "short_id": sample.second[:7],
        "author": "Bob Builder",
        "author_email": "bob@example.com",
        "committer": "Bob Builder <bob@example.com>",
        "message": "Second commit",
        "date_str": "2024-03-09T11:00:00-05:00",
        "timestamp": SECOND_TIME,
        "ref": "HEAD",
        "resolved_ref": "HEAD",
    }
    assert datetime.datetime.fromisoformat(out["date_str"]).timestamp() == SECOND_TIME


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [("develop", "refs/heads/develop"), ("v2", "refs/tags/v2"), ("refs/heads/develop", "refs/heads/develop")],
)
def test_ref_selects_the_commit(sample: Sample, ref: str, resolved: str) -> None:
    out = metadata(str(sample.path), ref=ref)
    assert out["commit_id"] == sample.first  # the annotated tag is peeled to its commit
    assert out["author"] == "Ann Author"
    assert out["message"] == "First commit\n\nWith a body."
    assert out["date_str"] == "2023-11-14T23:13:20+01:00"
    assert out["ref"] == ref
    assert out["resolved_ref"] == resolved


def test_commit_ids_full_and_abbreviated(sample: Sample) -> None:
    assert metadata(str(sample.path), ref=sample.first)["commit_id"] == sample.first
    short = metadata(str(sample.path), ref=sample.first[:10])
    assert short["commit_id"] == sample.first
    assert short["resolved_ref"] is None


def test_lightweight_tag_and_file_url(sample: Sample) -> None:
    assert metadata(sample.path.as_uri(), ref="light")["commit_id"] == sample.second


def test_unknown_ref_and_missing_repository_are_clean_errors(sample: Sample, tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="the ref 'nope' was not found in the repository"):
        metadata(str(sample.path), ref="nope")
    with pytest.raises(ConnectorError, match="there is no git repository at that path"):
        metadata(str(tmp_path / "absent"))


def test_local_repositories_are_refused_in_production(sample: Sample) -> None:
    spec = registry.get_type("GIT")
    with pytest.raises(BadRequest, match="local repositories are not allowed here"):
        registry.validate_full(spec, {"repository_url": str(sample.path), "command": "metadata"}, PRODUCTION)
    model = spec.schema.model_validate({"repository_url": str(sample.path), "command": "metadata"})
    with pytest.raises(ConnectorError, match="local repositories are not allowed here"):
        spec.run(model, PRODUCTION)


def test_no_process_is_ever_started(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    assert metadata(str(sample.path), ref="v2")["commit_id"] == sample.first


# ---- refused transports and refs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ext::sh -c touch% {marker}", "remote helpers (such as ext::) are not allowed"),
        ("fd::17", "remote helpers"),
        ("--upload-pack=touch {marker}", "must not begin with '-'"),
        ("-oProxyCommand=x", "must not begin with '-'"),
        ("ssh://git@example.com/repo.git", "the ssh:// transport is not allowed"),
        ("git://example.com/repo.git", "the git:// transport is not allowed"),
        ("git+ssh://example.com/repo.git", "the git+ssh:// transport is not allowed"),
        ("http://example.com/repo.git", "the http:// transport is not allowed"),
        ("git@example.com:org/repo.git", "host:path (ssh) is not allowed"),
        ("https://user:token@example.com/repo.git", "must not contain credentials"),
        ("relative/path", "must be an https:// URL"),
        ("file://host/srv/repo", "must name a local path"),
        ("https://example.com/a repo.git", "must not contain spaces"),
    ],
)
def test_transports_other_than_https_and_local_are_refused(url: str, reason: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    url = url.format(marker=marker)
    spec = registry.get_type("GIT")
    with pytest.raises(BadRequest) as caught:
        registry.validate_full(spec, {"repository_url": url, "command": "metadata"}, LOCAL)
    assert caught.value.message.startswith("inputs.repository_url: Value error, ")
    assert reason in caught.value.message
    with pytest.raises(BadRequest):  # refused when a connector is saved, too
        registry.validate_partial(spec, {"repository_url": url}, LOCAL)
    assert not marker.exists()


@pytest.mark.parametrize(
    "ref", ["-x", "--upload-pack=evil", "a..b", "HEAD~1", "v2^{}", "a b", "@{-1}", "x.lock", "/x"]
)
def test_refs_that_look_like_options_or_revision_syntax_are_refused(sample: Sample, ref: str) -> None:
    with pytest.raises(BadRequest, match=r"inputs\.ref: Value error"):
        metadata(str(sample.path), ref=ref)


def test_a_forged_model_still_cannot_reach_a_transport() -> None:
    spec = registry.get_type("GIT")
    forged = spec.schema.model_construct(repository_url="ext::sh -c id", command="metadata", ref="HEAD")
    with pytest.raises(ConnectorError, match="remote helpers"):
        spec.run(forged, LOCAL)


# ---- https, through the outbound guard --------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class Remote:
    url: str  # https://localhost:<port>/repo.git
    ca: str


@pytest.fixture(scope="module")
def remote(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """dulwich's smart-HTTP server for the sample repository, over TLS on 127.0.0.1."""
    from dulwich.repo import Repo
    from dulwich.server import DictBackend
    from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_server, make_wsgi_chain

    class QuietHandler(WSGIRequestHandlerLogger):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    repo = Repo(str(sample.path))
    repos: dict[str, Any] = {"/repo.git": repo}
    app = make_wsgi_chain(DictBackend(repos))
    httpd = make_server("127.0.0.1", 0, app, handler_class=QuietHandler, server_class=WSGIServerLogger)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Remote(f"https://localhost:{httpd.server_address[1]}/repo.git", str(cert))
    httpd.shutdown()
    httpd.server_close()
    repo.close()


def test_https_metadata_by_branch_tag_and_commit(sample: Sample, remote: Remote) -> None:
    ctx = replace(LOCAL, ca_bundle=remote.ca)
    assert metadata(remote.url, ctx)["commit_id"] == sample.second
    develop = metadata(remote.url, ctx, ref="develop")
    assert develop["commit_id"] == sample.first
    assert develop["date_str"] == "2023-11-14T23:13:20+01:00"
    assert metadata(remote.url, ctx, ref="v2")["commit_id"] == sample.first
    assert metadata(remote.url, ctx, ref=sample.first)["commit_id"] == sample.first


def test_https_fetch_leaves_no_temporary_directory(
    sample: Sample, remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    metadata(remote.url, replace(LOCAL, ca_bundle=remote.ca), ref="develop")
    assert list(tmp_path.iterdir()) == []


def test_https_to_loopback_is_refused_without_the_allow_list(remote: Remote) -> None:
    ctx = replace(PRODUCTION, ca_bundle=remote.ca)
    with pytest.raises(ConnectorError, match=r"'localhost' resolves to .*loopback address"):
        metadata(remote.url, ctx)


def test_https_errors_are_clean(remote: Remote) -> None:
    with pytest.raises(ConnectorError, match=r"^fetching from localhost failed: certificate verify failed"):
        metadata(remote.url, LOCAL)  # the test CA is not trusted
    ctx = replace(LOCAL, ca_bundle=remote.ca)
    with pytest.raises(ConnectorError, match=r"^localhost has no git repository at that URL$"):
        metadata(remote.url.replace("repo.git", "other.git"), ctx)
    with pytest.raises(ConnectorError, match=r"^the ref 'nope' was not found"):
        metadata(remote.url, ctx, ref="nope")


@pytest.mark.parametrize("url", ["https://169.254.169.254/repo.git", "https://[fd00:ec2::254]/repo.git"])
def test_https_metadata_address_is_refused(url: str) -> None:
    with pytest.raises(
        BadRequest, match=r"inputs\.repository_url: the host .* is the cloud metadata address"
    ):
        metadata(url, LOCAL)
    spec = registry.get_type("GIT")  # and by the run itself, before any connection
    with pytest.raises(ConnectorError, match="the cloud metadata address"):
        spec.run(spec.schema.model_validate({"repository_url": url, "command": "metadata"}), LOCAL)


def test_refs_resolve_like_rev_parse() -> None:
    from flowgate.connectors.types.git import resolve_ref

    tag, branch, head = b"a" * 40, b"b" * 40, b"c" * 40
    refs: dict[bytes, bytes | None] = {b"refs/tags/x": tag, b"refs/heads/x": branch, b"HEAD": head}
    assert resolve_ref("x", refs) == (tag, "refs/tags/x")  # a tag wins over a branch of the same name
    assert resolve_ref("refs/heads/x", refs) == (branch, "refs/heads/x")
    assert resolve_ref("HEAD", refs) == (head, "HEAD")
    assert resolve_ref("D" * 40, refs) == (b"d" * 40, None)
    with pytest.raises(ConnectorError, match="'y' was not found"):
        resolve_ref("y", refs)
