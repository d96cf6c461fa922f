"""Workspace linking (seed 000): sync configs and the RSA-signed exchange between deployments.

Built so far: the keys (`keys`) and the RFC 9421 signatures of the exchange (`signing`). The sync
configs API, the `/sync` route and its sender, and remote runs are not built yet (README, "What is
not built yet").
"""
