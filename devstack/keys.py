"""`make keys`: two RSA key pairs for a workspace link, and each side's sync config key fields.

A command-line tool for people setting up a link (seed 000), so it prints; the keys are made and
checked by the platform (`flowgate.sync.keys`).
"""

from __future__ import annotations

import json

from flowgate.sync.keys import generate


def main() -> int:
    """Print two pairs, and each side's sync config key fields (controlling: A, controlled: B)."""
    a, b = generate(), generate()
    print("# Controlling side (A): its sync config links to B")
    print(json.dumps({"own_private_key": a.private_pem, "remote_public_key": b.public_pem}, indent=2))
    print(f"# A's key fingerprint (its keyid): {a.fingerprint}\n")
    print("# Controlled side (B): its sync config of the same name trusts A")
    print(json.dumps({"own_private_key": b.private_pem, "remote_public_key": a.public_pem}, indent=2))
    print(f"# B's key fingerprint (its keyid): {b.fingerprint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
