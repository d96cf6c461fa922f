"""`make keys`: two RSA key pairs for a workspace link, and each side's sync config key fields.

A command-line tool for people setting up a link (seed 000), so it prints; the keys are made and
checked by the platform (`flowgate.sync.keys`). With `--dir DIR` it writes the four PEM files instead
(`a.key`, `a.pub`, `b.key`, `b.pub`; the private ones readable by their owner only), for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from flowgate.sync.keys import generate


def main(argv: Sequence[str] | None = None) -> int:
    """Print two pairs, and each side's sync config key fields (controlling: A, controlled: B)."""
    parser = argparse.ArgumentParser(prog="make keys", description=__doc__)
    parser.add_argument("--dir", type=Path, help="write a.key, a.pub, b.key, b.pub here instead of printing")
    args = parser.parse_args(argv)
    a, b = generate(), generate()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        for name, pair in (("a", a), ("b", b)):
            private = args.dir / f"{name}.key"
            private.touch(mode=0o600)
            os.chmod(private, 0o600)
            private.write_text(pair.private_pem)
            (args.dir / f"{name}.pub").write_text(pair.public_pem)
        print(f"wrote {args.dir}/a.key, a.pub (A: {a.fingerprint}) and b.key, b.pub (B: {b.fingerprint})")
        return 0
    print("# Controlling side (A): its sync config links to B")
    print(json.dumps({"own_private_key": a.private_pem, "remote_public_key": b.public_pem}, indent=2))
    print(f"# A's key fingerprint (its keyid): {a.fingerprint}\n")
    print("# Controlled side (B): its sync config trusts A")
    print(json.dumps({"own_private_key": b.private_pem, "remote_public_key": a.public_pem}, indent=2))
    print(f"# B's key fingerprint (its keyid): {b.fingerprint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
