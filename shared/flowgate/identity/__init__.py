"""The identity context: login and tokens, contracts, members, roles, workspaces and their access.
Other contexts use it only through `flowgate.identity.ports`. Wired by flowgate.wiring."""
