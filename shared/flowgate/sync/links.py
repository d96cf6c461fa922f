"""A link: a sync config with its keys loaded, and the per-container cache that loads them once.

Loading an RSA private key with full validation takes 40-300 ms (DESIGN §6), so a container loads each
config's keys once per set of keys (each set is its own secret, named by the item's `keys_ref`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from flowgate.sync.keys import fingerprint, private_key, public_key
from flowgate.sync.models import SyncRole
from flowgate.sync.ports import KeyVault


@dataclass(frozen=True)
class LoadedKeys:
    own: rsa.RSAPrivateKey
    own_fingerprint: str
    remote: rsa.RSAPublicKey
    remote_next: rsa.RSAPublicKey | None
    # The peer keys' fingerprints, once per load rather than on every request verified.
    remote_fingerprint: str = field(init=False)
    remote_next_fingerprint: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "remote_fingerprint", fingerprint(self.remote))
        nxt = self.remote_next
        object.__setattr__(self, "remote_next_fingerprint", fingerprint(nxt) if nxt is not None else None)


@dataclass(frozen=True)
class Link:
    config: Mapping[str, Any]
    keys: LoadedKeys

    @property
    def id(self) -> str:
        return str(self.config["id"])

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def workspace_id(self) -> str:
        return str(self.config["workspace_id"])

    @property
    def role(self) -> SyncRole:
        return SyncRole(self.config["role"])

    def remote_keys(self, now: datetime) -> dict[str, rsa.RSAPublicKey]:
        """The peer keys that verify now, by fingerprint: during a rotation both; after
        `rotation_ends_at` only the next one."""
        loaded = self.keys
        keys = {loaded.remote_fingerprint: loaded.remote}
        if loaded.remote_next is not None and loaded.remote_next_fingerprint is not None:
            ends = self.config.get("rotation_ends_at")
            if ends and now >= datetime.fromisoformat(str(ends).replace("Z", "+00:00")):
                keys = {}
            keys[loaded.remote_next_fingerprint] = loaded.remote_next
        return keys


class KeyRing:
    """Keys per (config id, keys ref), loaded on first use in this container."""

    def __init__(self, vault: KeyVault) -> None:
        self.vault = vault
        self._loaded: dict[tuple[str, str], LoadedKeys] = {}
        self._lock = threading.Lock()

    def link(self, config: Mapping[str, Any]) -> Link:
        slot = (str(config["id"]), str(config["keys_ref"]))
        keys = self._loaded.get(slot)
        if keys is None:
            with self._lock:
                keys = self._loaded.get(slot) or self._load(*slot)
                self._loaded = {k: v for k, v in self._loaded.items() if k[0] != slot[0]} | {slot: keys}
        return Link(config, keys)

    def _load(self, config_id: str, keys_ref: str) -> LoadedKeys:
        raw = self.vault.get(config_id, keys_ref)
        own = private_key(str(raw["own_private_key"]), "own_private_key")
        nxt = raw.get("remote_public_key_next")
        return LoadedKeys(
            own=own,
            own_fingerprint=fingerprint(own.public_key()),
            remote=public_key(str(raw["remote_public_key"]), "remote_public_key"),
            remote_next=public_key(nxt, "remote_public_key_next") if nxt else None,
        )


Clock = Callable[[], datetime]
