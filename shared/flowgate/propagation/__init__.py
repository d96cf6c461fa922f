"""Artifact propagation (seed 004): the EFT-style admin API, create-or-replace by id, JSON-RPC `propagate`."""
