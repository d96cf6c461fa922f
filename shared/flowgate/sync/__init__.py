"""Workspace linking (seed 000): sync configs and the RSA-signed exchange between deployments.

Built so far: the keys (`keys`). The sync configs API, the signed exchange and remote runs are not built
yet (README, "What is not built yet").
"""
