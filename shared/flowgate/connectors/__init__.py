"""The connectors context: connectors (a type plus a YAML value plus vault secret names), the workspace
vault, and connection runs (seed 003, DESIGN §3.5). Wired by flowgate.wiring.

Importing it is cheap (pydantic and the standard library): YAML, requests, dulwich and boto3 load only
when a value is parsed, a call made or AWS reached.
"""
