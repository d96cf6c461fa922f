"""Flowgate's platform package: domain, data access, auth, errors, config and observability.

Deployed as the SharedLayer; one subpackage or module per bounded context. Modules import their heavy
dependencies (boto3, cryptography) when first needed, so a function pays only for what its route uses.
"""
