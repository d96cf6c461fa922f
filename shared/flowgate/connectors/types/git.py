"""The GIT connector type (seed 003): `metadata` of a branch, tag or commit of a repository.

Lambda has no git binary, and shelling out to git with user input is how `ext::` and `--upload-pack`
injections happen (DESIGN §5), so this type uses dulwich, pure Python, and never starts a process.
Transports are limited to:

* `https://` — the host is checked by the outbound guard and every connection goes through its
  connect-time check (the pool classes of `url_guard.guarded_session`); redirects must stay on the host.
  Credentials come from the `username`/`password` inputs (a vault secret), never from the URL.
* a local path or `file://` — only where `RunContext.allow_local_git` is set (local mode, tests): in AWS
  a path would read the Lambda's own file system.

Everything else — `ext::` and other remote helpers, `ssh://`, `git://`, `host:path`, plain `http://` —
is refused, as are URLs and refs that begin with `-`. A remote is fetched shallowly (depth 1, only the
wanted commit) into a bare temporary repository that is always removed.

dulwich, urllib3 and requests are imported inside `run`.
"""

from __future__ import annotations

import datetime
import re
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowgate.connectors.registry import ConnectorType
from flowgate.connectors.runtime import MAX_TIMEOUT_SECONDS, ConnectorError, RunContext, short_reason
from flowgate.errors import BadRequest

if TYPE_CHECKING:
    import urllib3
    from dulwich.objects import Commit
    from dulwich.repo import Repo

DEFAULT_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP_LIKE = re.compile(r"^[^/]+:")
_WHITESPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_REF = re.compile(r"^[A-Za-z0-9_+@][A-Za-z0-9._/+@-]*$")
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{4,63}$")


def classify_url(url: str) -> tuple[Literal["https", "local"], str]:
    """("https", url) or ("local", absolute path); ValueError saying why any other form is refused."""
    if url.startswith("-"):
        raise ValueError("must not begin with '-'")
    if _REMOTE_HELPER.match(url):
        raise ValueError("remote helpers (such as ext::) are not allowed; use an https:// URL")
    if _WHITESPACE_OR_CONTROL.search(url):
        raise ValueError("must not contain spaces or control characters")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        parts = urlsplit(url)
        if scheme == "https":
            if "@" in parts.netloc:
                raise ValueError("must not contain credentials; give username and password (a vault secret)")
            if not parts.hostname:
                raise ValueError("has no host")
            return "https", url
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError("a file:// URL must name a local path (file:///path)")
            path = unquote(parts.path)
            if not path.startswith("/"):
                raise ValueError("a file:// URL must name an absolute path")
            return "local", path
        raise ValueError(f"the {scheme}:// transport is not allowed; use https://")
    if url.startswith("/"):
        return "local", url
    if _SCP_LIKE.match(url):
        raise ValueError("host:path (ssh) is not allowed; use https://")
    raise ValueError("must be an https:// URL (or, where allowed, an absolute local path)")


def check_ref(ref: str) -> str:
    """A branch, tag, full ref name or commit id; refuses what git itself would read as an option or
    as revision syntax (`-x`, `..`, `@{`, `~`, `^`, `:`)."""
    if ref.startswith("-"):
        raise ValueError("must not begin with '-'")
    if not _REF.match(ref) or ".." in ref or "//" in ref or ref.endswith(("/", ".", ".lock")) or "/." in ref:
        raise ValueError("is not a valid branch, tag or commit id")
    return ref


class GitInputs(BaseModel):
    """Inputs of the GIT connector."""

    model_config = ConfigDict(extra="forbid")

    repository_url: str = Field(min_length=1, max_length=2048)
    command: Literal["metadata"]
    # A branch, tag, full ref name (refs/...) or commit id; HEAD is the remote's default branch.
    ref: str = Field(default="HEAD", min_length=1, max_length=255)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    timeout: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS)

    @field_validator("repository_url")
    @classmethod
    def _url(cls, value: str) -> str:
        classify_url(value)
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        return check_ref(value)


def check(inputs: Mapping[str, Any], ctx: RunContext, prefix: str) -> None:
    """Local repositories only where the context allows them; https hosts through the URL guard."""
    from flowgate.url_guard import UrlNotAllowed, check_url

    url = inputs.get("repository_url")
    if not isinstance(url, str) or not url:
        return
    try:
        kind, _ = classify_url(url)
    except ValueError:
        return  # the schema reports it
    if kind == "local" and not ctx.allow_local_git:
        raise BadRequest(
            f"{prefix}.repository_url: local repositories are not allowed here; use an https:// URL",
            code="url_not_allowed",
        )
    if kind == "https":
        try:
            check_url(url, ctx.outbound_policy, resolve=False)
        except UrlNotAllowed as exc:
            raise BadRequest(f"{prefix}.repository_url: {exc.message}", code="url_not_allowed") from None


# ---- resolving a ref -------------------------------------------------------------------------------------


def resolve_ref(ref: str, refs: Mapping[bytes, bytes | None]) -> tuple[bytes, str | None]:
    """The object a ref names among the advertised `refs`, and the full ref name (None for a commit id).

    Looked up like `git rev-parse`: HEAD or a full name, then refs/<ref>, refs/tags/<ref>,
    refs/heads/<ref>; falls back to a full commit id. An annotated tag gives the tag object, not its
    peeled commit: every server serves an advertised tip, while wanting the commit behind it may be
    refused; the tag is peeled after the fetch. Raises ConnectorError when nothing matches.
    """
    names = [ref] if ref == "HEAD" or ref.startswith("refs/") else []
    names += [f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}"]
    for name in names:
        sha = refs.get(name.encode())
        if sha:
            return sha, name
    if _FULL_SHA.match(ref.lower()):
        return ref.lower().encode(), None
    raise ConnectorError(f"the ref {ref!r} was not found in the repository")


def _peel(repo: Repo, sha: bytes, ref: str) -> Commit:
    """The commit `sha` names, following annotated tags."""
    from dulwich.objects import Commit, Tag

    try:
        obj = repo[sha]
        for _ in range(10):  # tags of tags, but not forever
            if not isinstance(obj, Tag):
                break
            obj = repo[obj.object[1]]
    except KeyError:
        raise ConnectorError(f"the ref {ref!r} was not found in the repository") from None
    if not isinstance(obj, Commit):
        raise ConnectorError(f"the ref {ref!r} does not name a commit")
    return obj


def _decode(raw: bytes, encoding: bytes | None) -> str:
    name = encoding.decode("ascii", "replace") if encoding else "utf-8"
    try:
        return raw.decode(name, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def metadata(commit: Commit, ref: str, resolved: str | None) -> dict[str, Any]:
    """The outputs of `metadata`: who, when (ISO 8601 with the author's UTC offset) and what."""
    author = _decode(commit.author, commit.encoding)
    name, _, email = author.partition(" <")
    when = datetime.datetime.fromtimestamp(
        commit.author_time, datetime.timezone(datetime.timedelta(seconds=commit.author_timezone))
    )
    commit_id = commit.id.decode("ascii")
    return {
        "commit_id": commit_id,
        "short_id": commit_id[:7],
        "author": name.strip(),
        "author_email": email.rstrip(">").strip(),
        "committer": _decode(commit.committer, commit.encoding),
        "message": _decode(commit.message, commit.encoding).rstrip("\n"),
        "date_str": when.isoformat(),
        "timestamp": commit.author_time,
        "ref": ref,
        "resolved_ref": resolved,
    }


# ---- local repositories -----------------------------------------------------------------------------------


def _local(path: str, ref: str) -> dict[str, Any]:
    """Read the repository in place (local mode only): nothing is copied and nothing is executed."""
    from dulwich.errors import NotGitRepository
    from dulwich.repo import Repo

    try:
        repo = Repo(path)
    except (NotGitRepository, OSError):
        raise ConnectorError("there is no git repository at that path") from None
    with repo:
        refs: dict[bytes, bytes | None] = {bytes(k): v for k, v in repo.get_refs().items()}
        try:
            sha, resolved = resolve_ref(ref, refs)
        except ConnectorError:
            if not _SHORT_SHA.match(ref.lower()):
                raise
            matches = list(repo.object_store.iter_prefix(ref.lower().encode()))
            if len(matches) != 1:
                why = "is ambiguous" if matches else "was not found in the repository"
                raise ConnectorError(f"the ref {ref!r} {why}") from None
            sha, resolved = matches[0], None
        return metadata(_peel(repo, sha, ref), ref, resolved)


# ---- remote repositories over https ------------------------------------------------------------------------


def _pool_manager(ctx: RunContext, base_url: str, timeout: float) -> urllib3.PoolManager:
    """A urllib3 pool manager for dulwich whose connections are the outbound guard's (checked after
    resolution, connecting only to judged addresses) and whose redirects must stay on the host."""
    import urllib3
    from requests.adapters import HTTPAdapter

    from flowgate.url_guard import check_redirect, guarded_session

    with guarded_session(ctx.outbound_policy) as session:
        # The guard's adapter builds its pool manager with connect-time-checked connection classes.
        adapter = session.get_adapter("https://")
        assert isinstance(adapter, HTTPAdapter)
        pool_classes = dict(adapter.poolmanager.pool_classes_by_scheme)

    class GuardedPoolManager(urllib3.PoolManager):
        def urlopen(  # type: ignore[override]
            self, method: str, url: str, redirect: bool = True, **kw: Any
        ) -> urllib3.BaseHTTPResponse:
            check_redirect(base_url, url)  # every hop of a redirect comes through here again
            return super().urlopen(method, url, redirect=redirect, **kw)

    manager = GuardedPoolManager(
        headers={"User-Agent": "flowgate-git"},
        cert_reqs="CERT_REQUIRED",
        ca_certs=ctx.ca_bundle,
        timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT_SECONDS, timeout), read=timeout),
        retries=urllib3.Retry(total=2, connect=2, read=0, redirect=5, status=0),
    )
    manager.pool_classes_by_scheme = pool_classes
    return manager


def _remote(inputs: GitInputs, ctx: RunContext) -> dict[str, Any]:
    from dulwich.client import HTTPUnauthorized, Urllib3HttpGitClient
    from dulwich.errors import GitProtocolError, NotGitRepository
    from dulwich.repo import Repo

    from flowgate.url_guard import UrlNotAllowed, check_url

    try:
        target = check_url(inputs.repository_url, ctx.outbound_policy)
    except UrlNotAllowed as exc:
        raise ConnectorError(exc.message) from None
    host = target.host
    timeout = ctx.timeout(inputs.timeout)
    client = Urllib3HttpGitClient(
        inputs.repository_url,
        pool_manager=_pool_manager(ctx, inputs.repository_url, timeout),
        username=inputs.username,
        password=inputs.password,
        quiet=True,
    )
    try:
        refs: dict[bytes, bytes | None] = {bytes(k): v for k, v in client.get_refs(b"").refs.items()}
        sha, resolved = resolve_ref(inputs.ref, refs)

        def wants(_refs: Mapping[bytes, bytes], depth: int | None = None) -> list[bytes]:
            return [sha]

        with tempfile.TemporaryDirectory(prefix="flowgate-git-") as tmp:
            repo = Repo.init_bare(tmp)
            with repo:
                # Only the commit: metadata needs no trees or blobs (servers without filters send them).
                client.fetch(b"", repo, determine_wants=wants, depth=1, filter_spec=b"tree:0")  # type: ignore[arg-type]
                return metadata(_peel(repo, sha, inputs.ref), inputs.ref, resolved)
    except UrlNotAllowed as exc:
        raise ConnectorError(exc.message) from None
    except NotGitRepository:
        raise ConnectorError(f"{host} has no git repository at that URL") from None
    except HTTPUnauthorized:
        what = "refused the credentials" if inputs.username else "asks for credentials (username, password)"
        raise ConnectorError(f"{host} {what}") from None
    except GitProtocolError as exc:
        if _FULL_SHA.match(inputs.ref.lower()) and "not our ref" in str(exc).lower():
            raise ConnectorError(
                f"{host} does not serve commit {inputs.ref} directly; use a branch or a tag"
            ) from None
        raise ConnectorError(f"fetching from {host} failed: {short_reason(exc)}") from None
    except OSError as exc:
        raise ConnectorError(f"fetching from {host} failed: {short_reason(exc)}") from None


def run(inputs: GitInputs, ctx: RunContext) -> dict[str, Any]:
    """Run the command (`metadata`) against the repository."""
    try:
        kind, location = classify_url(inputs.repository_url)
    except (
        ValueError
    ) as exc:  # validated already; checked again since nothing may reach a transport unchecked
        raise ConnectorError(f"repository_url {exc}") from None
    if kind == "local":
        if not ctx.allow_local_git:
            raise ConnectorError("local repositories are not allowed here; use an https:// URL")
        return _local(location, inputs.ref)
    return _remote(inputs, ctx)


TYPE: ConnectorType[GitInputs] = ConnectorType(
    name="GIT",
    schema=GitInputs,
    run=run,
    check=check,
    description="Metadata of a branch, tag or commit of a git repository (https, or local in local mode).",
)
