"""Requests verified per second on the sync exchange's inbound path, against the raw RSA-PSS verify rate of
the same key in the same run (workspace linking: `flowgate.sync.exchange.Receiver.receive`).

A fresh interpreter (`--child`), pinned to one core for the measurement, makes two RSA-3072 pairs
(`flowgate.sync.keys.generate`): the peer's (A, controlling, which signs) and this side's (B, controlled,
which verifies). Its sync config's keys sit in a KeyVault fake in memory, as Secrets Manager would hold
them (B's private key, A's public key). Three subjects, interleaved, the order rotating every round,
SECONDS each in all (`--rounds` slices, after `--warmup` unrecorded ones):

* raw: `RSAPublicKey.verify` of one signature (RSA-PSS, SHA-512, MGF1-SHA-512, salt length 64: what
  `rsa-pss-sha512` is) with the already loaded public key, over a message the size of a signature base;
* inbound: what `Receiver.receive` runs to verify a request, each a different request signed beforehand
  (`sign_request` with A's key, a fresh nonce each, outside the timed loop): `KeyRing.link(config)` (the
  ring built once, as in a warm container, so no key is loaded), `Link.remote_keys(now)` and
  `verify_request` (the package's RFC 9421 verify: the Signature/Signature-Input fields parsed, the
  signature base rebuilt, RSA-PSS, Content-Digest against the body, created/alg/nonce checks) with an
  in-memory NonceStore (a set). The nonce's conditional PutItem on the table (`TableNonceStore`) is a
  DynamoDB call of its own, as are the config's GetItem and the health update: none is in this rate;
* per-request keys: the same, with a new KeyRing for every request, so both keys are loaded and checked
  from PEM each time (what the ring's cache saves). One load takes longer than a slice, so this subject
  overruns its slices (its `seconds` say by how much); its rate is still requests / seconds measured.

The body is an envelope with one `run` message. The requests are signed before the measurement (before
the pinning, a process per core: signing costs more than verifying), as many as a probe of the inbound
rate says the measurement needs, with a margin, each round using at most its share (a pool too small
shortens every round alike: `rounds_cut_short` in the notes). Goal: inbound / raw >= GOAL. About 20 s
in all on two cores, half of it signing.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.moto_support import run_rounds_child, script_main
from benchmarks.run import Options, Row

if TYPE_CHECKING:
    from flowgate.sync.links import KeyRing

GOAL = 0.8
SECONDS = 2.0  # per subject, over all recorded rounds
PROBE_REQUESTS = 300  # verified through the inbound path first: the warm-up, and the rate that sizes the pool
MARGIN = 1.1  # signed requests per expected verification (too few shorten every round: see rounds_cut_short)
CHILD_TIMEOUT_SECONDS = 180.0
URL = "https://controlled.example/api/latest/sync_config/link-from-a/sync"
RAW, INBOUND, PER_REQUEST = "raw", "inbound", "per_request"
SUBJECTS = (RAW, INBOUND, PER_REQUEST)
LABELS = {
    RAW: "raw RSA-PSS-SHA512 verify, key loaded",
    INBOUND: "inbound: KeyRing.link + remote_keys + verify_request",
    PER_REQUEST: "inbound, keys loaded per request (new KeyRing)",
}


# ---- the child: keys, requests, the measurement -----------------------------------------------------


class MemoryVault:
    """A KeyVault in memory (Secrets Manager's part of a config's keys)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str | None]] = {}

    def put(self, config_id: str, keys_ref: str, keys: Mapping[str, str | None]) -> None:
        self.secrets[(config_id, keys_ref)] = dict(keys)

    def get(self, config_id: str, keys_ref: str) -> dict[str, str | None]:
        return dict(self.secrets[(config_id, keys_ref)])

    def delete(self, config_id: str, keys_ref: str) -> None:
        self.secrets.pop((config_id, keys_ref), None)


class MemoryNonces:
    """A NonceStore in memory: a set (the table's conditional PutItem is not measured)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def remember(self, key_id: str, nonce: str, ttl_seconds: int) -> bool:
        if (key_id, nonce) in self.seen:
            return False
        self.seen.add((key_id, nonce))
        return True


def _body() -> bytes:
    """An envelope with one `run` message, as the controlling side sends it."""
    from flowgate.sync.protocol import Envelope, Run

    eid = str(uuid.uuid4())
    run = Run(
        id=f"run:{eid}",
        execution_id=eid,
        flow="remote-hello",
        script="import flow_api\ndef handler(system, this, inputs):\n    return this.success('ok')\n",
        inputs={"who": "bench", "n": 1},
        started_by="bench-admin",
    )
    return Envelope(messages=[run]).encode()


_signing_key: Any = None  # a signing worker's private key, loaded once by its initializer


def _load_signing_key(pem: str) -> None:
    global _signing_key  # noqa: PLW0603 - one per worker process
    from flowgate.sync.keys import private_key

    _signing_key = private_key(pem, "peer key")


def _sign_many(job: tuple[int, bytes]) -> list[dict[str, str]]:
    from flowgate.sync.signing import sign_request

    count, body = job
    return [sign_request(_signing_key, "POST", URL, body) for _ in range(count)]


def _presign(pem: str, body: bytes, count: int) -> list[dict[str, str]]:
    """`count` requests signed with the peer's key, each with its own nonce, on every core we may use."""
    workers = max(1, min(len(_cores()), 8))
    chunks = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=_load_signing_key, initargs=(pem,)) as pool:
        signed = pool.map(_sign_many, [(n, body) for n in chunks if n])
    return [headers for part in signed for headers in part]


def _cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else {0}


def _pin_to_one_core() -> int | None:
    """This process on one core from now on (the lowest it may use); None where it cannot be pinned."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(_cores())
    os.sched_setaffinity(0, {core})
    return core


class Subjects:
    """The three ways to verify, each a function of `until` (perf_counter) that verifies until then
    (at least once) and returns how many it verified."""

    def __init__(self, rsa_bits: int) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        from flowgate.sync.keys import generate, private_key
        from flowgate.sync.links import KeyRing

        self.peer, own = generate(), generate()  # A's pair (signs), B's pair (verifies)
        self.config: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "name": "link-from-a",
            "workspace_id": str(uuid.uuid4()),
            "role": "controlled",
            "enabled": True,
            "keys_ref": "k1",
        }
        self.vault = MemoryVault()
        self.vault.put(
            self.config["id"],
            "k1",
            {
                "own_private_key": own.private_pem,
                "remote_public_key": self.peer.public_pem,
                "remote_public_key_next": None,
            },
        )
        self.ring = KeyRing(self.vault)
        self.ring.link(self.config)  # a warm container: the keys are loaded
        self.nonces = MemoryNonces()
        self.body = _body()
        self.pools: dict[str, list[dict[str, str]]] = {INBOUND: [], PER_REQUEST: []}
        self.used = dict.fromkeys(self.pools, 0)

        self.public = self.ring.link(self.config).keys.remote
        if self.public.key_size != rsa_bits:
            raise RuntimeError(f"the keys are RSA-{self.public.key_size}, not RSA-{rsa_bits}")
        self.padding = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
        self.hash = hashes.SHA512()
        self.message = b"x" * 300  # about a signature base's size
        signer = private_key(self.peer.private_pem, "peer key")
        self.signature = signer.sign(self.message, self.padding, self.hash)

    def left(self, pool: str) -> int:
        return len(self.pools[pool]) - self.used[pool]

    def _take(self, pool: str) -> dict[str, str]:
        headers = self.pools[pool][self.used[pool]]
        self.used[pool] += 1
        return headers

    def raw(self, until: float, limit: int) -> int:
        """The one signature, verified until `until` (`limit` unused: nothing is used up)."""
        verify, signature, message = self.public.verify, self.signature, self.message
        pss, sha = self.padding, self.hash
        n = 0
        while True:
            verify(signature, message, pss, sha)
            n += 1
            if time.perf_counter() >= until:
                return n

    def _verify(self, ring: KeyRing, headers: Mapping[str, str]) -> None:
        """What Receiver.receive does to verify a request, but the table's calls."""
        from flowgate.sync.signing import verify_request

        link = ring.link(self.config)
        verify_request(
            link.remote_keys(datetime.now(UTC)),
            self.nonces,
            method="POST",
            url=URL,
            headers=headers,
            body=self.body,
        )

    def inbound(self, until: float, limit: int) -> int:
        """Requests of its own pool until `until` (at most `limit`), with the container's ring."""
        n = 0
        while n < limit and self.left(INBOUND):
            self._verify(self.ring, self._take(INBOUND))
            n += 1
            if time.perf_counter() >= until:
                break
        return n

    def per_request(self, until: float, limit: int) -> int:
        """The same with a new ring, so new keys, for every request."""
        from flowgate.sync.links import KeyRing

        n = 0
        while n < limit and self.left(PER_REQUEST):
            self._verify(KeyRing(self.vault), self._take(PER_REQUEST))
            n += 1
            if time.perf_counter() >= until:
                break
        return n


def _check_refusals(subjects: Subjects, unused: Mapping[str, str]) -> None:
    """The path measured refuses what it must: a body changed by one byte, then a replay."""
    from flowgate.errors import Unauthorized
    from flowgate.sync.signing import INVALID_SIGNATURE, REPLAYED_NONCE, verify_request

    keys = subjects.ring.link(subjects.config).remote_keys(datetime.now(UTC))
    tampered = subjects.body.replace(b"bench", b"bencH")
    nonces = MemoryNonces()
    for body, code in ((tampered, INVALID_SIGNATURE), (subjects.body, None), (subjects.body, REPLAYED_NONCE)):
        try:
            verify_request(keys, nonces, method="POST", url=URL, headers=unused, body=body)
        except Unauthorized as exc:
            if exc.code != code:
                raise RuntimeError(f"refused with {exc.code}, expected {code}") from exc
        else:
            if code is not None:
                raise RuntimeError(f"verified a request that should be refused ({code})")


def child(result_path: Path, rounds: int, warmup: int) -> None:
    shared = str(Path(__file__).resolve().parent.parent / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)
    subjects = Subjects(rsa_bits=3072)
    total_rounds = warmup + rounds
    slice_seconds = SECONDS / rounds

    # The probe (twice: the first warms up): the inbound rate and one key load size the pools.
    signed = _presign(subjects.peer.private_pem, subjects.body, 2 * PROBE_REQUESTS + 2)
    probe_rate = 0.0
    for attempt in range(2):
        subjects.pools[INBOUND] = signed[attempt * PROBE_REQUESTS : (attempt + 1) * PROBE_REQUESTS]
        subjects.used[INBOUND] = 0
        began = time.perf_counter()
        while subjects.left(INBOUND):
            subjects.inbound(0.0, 1)
        probe_rate = PROBE_REQUESTS / (time.perf_counter() - began)
    subjects.pools[PER_REQUEST] = signed[-2:]
    subjects.per_request(0.0, 1)
    began = time.perf_counter()
    subjects.per_request(0.0, 1)
    load_seconds = time.perf_counter() - began

    seconds_each = slice_seconds * total_rounds
    sizes = {
        INBOUND: math.ceil(probe_rate * seconds_each * MARGIN) + 20,
        PER_REQUEST: math.ceil(seconds_each / load_seconds * MARGIN) + total_rounds + 5,
    }
    t0 = time.perf_counter()
    signed = _presign(subjects.peer.private_pem, subjects.body, sum(sizes.values()))
    signing_seconds = time.perf_counter() - t0
    subjects.pools = {INBOUND: signed[: sizes[INBOUND]], PER_REQUEST: signed[sizes[INBOUND] :]}
    subjects.used = dict.fromkeys(subjects.pools, 0)

    _check_refusals(subjects, signed[0])
    core = _pin_to_one_core()
    runs: dict[str, Callable[[float, int], int]] = {
        RAW: subjects.raw,
        INBOUND: subjects.inbound,
        PER_REQUEST: subjects.per_request,
    }
    counts = dict.fromkeys(SUBJECTS, 0)
    spans = dict.fromkeys(SUBJECTS, 0.0)
    per_round: dict[str, list[float]] = {name: [] for name in SUBJECTS}
    # Each round may use its share of a pool, so a pool sized too small shortens every round alike.
    shares = {name: math.ceil(len(pool) / total_rounds) for name, pool in subjects.pools.items()}
    cut_short = dict.fromkeys(subjects.pools, 0)
    for r in range(total_rounds):
        order = SUBJECTS[r % 3 :] + SUBJECTS[: r % 3]
        for name in order:
            start = time.perf_counter()
            n = runs[name](start + slice_seconds, shares.get(name, 0))
            span = time.perf_counter() - start
            if n == 0:
                raise RuntimeError(f"the {name} pool ran out in round {r}")
            if name in cut_short and span < slice_seconds:
                cut_short[name] += 1
            if r >= warmup:
                counts[name] += n
                spans[name] += span
                per_round[name].append(n / span)
    result = {
        "counts": counts,
        "seconds": spans,
        "per_round": per_round,
        "rsa_bits": subjects.public.key_size,
        "body_bytes": len(subjects.body),
        "signature_header_chars": len(signed[0]["Signature"]),
        "core": core,
        "probe_rate": probe_rate,
        "key_load_ms": load_seconds * 1000,
        "signed_requests": {name: len(pool) for name, pool in subjects.pools.items()},
        "signed_requests_used": subjects.used,
        "rounds_cut_short": cut_short,
        "signing_seconds": signing_seconds,
        "nonces_remembered": len(subjects.nonces.seen),
    }
    result_path.write_text(json.dumps(result))


# ---- the parent: rows -------------------------------------------------------------------------------


def _rows(m: dict[str, Any]) -> list[Row]:
    rates = {name: m["counts"][name] / m["seconds"][name] for name in SUBJECTS}
    goal = (
        f"inbound / raw >= {GOAL} (one core; the nonce's table PutItem, a DynamoDB call, is not in the "
        "inbound rate: nonces go to an in-memory set)"
    )
    common = {
        "core": m["core"],
        "body_bytes": m["body_bytes"],
        "signature_header_chars": m["signature_header_chars"],
        "probe_rate_per_s": round(m["probe_rate"], 1),
        "signed_requests": m["signed_requests"],
        "signed_requests_used": m["signed_requests_used"],
        "rounds_cut_short": m["rounds_cut_short"],  # ended at their share of the pool, before the slice
        "signing_seconds": round(m["signing_seconds"], 2),
        "nonces_remembered": m["nonces_remembered"],  # the probe's included
    }
    rows = []
    for name in SUBJECTS:
        figures: dict[str, float | int | str] = {
            "rsa_bits": m["rsa_bits"],
            "n": m["counts"][name],
            "seconds": m["seconds"][name],
            "per_s": rates[name],
            "us_each": 1e6 / rates[name],
        }
        verdict = None
        if name != RAW:  # as text: the table shows floats under 10 with two decimals
            figures["ratio"] = f"{rates[name] / rates[RAW]:.4f}"
        if name == INBOUND:
            verdict = "PASS" if rates[name] / rates[RAW] >= GOAL else "UNDER"
        notes: dict[str, Any] = {"per_round_per_s": [round(x, 1) for x in m["per_round"][name]], **common}
        if name == PER_REQUEST:
            notes["first_key_load_ms"] = round(m["key_load_ms"], 1)
        rows.append(Row(LABELS[name], figures, verdict, goal, notes))
    return rows


def run(options: Options) -> list[Row]:
    return _rows(run_rounds_child(options, "sync_verify", timeout=CHILD_TIMEOUT_SECONDS))


if __name__ == "__main__":
    sys.exit(script_main("sync_verify", child))
