"""The child side of the flow-script sandbox: `bootstrap.py` is the entry point of the sandboxed process and
`flow_api.py` is the module flow scripts import.

Both are standard library only: the sandboxed interpreter runs with `-I -S`, so site-packages (boto3 and the
rest of this package's dependencies) are out of its reach. They never import `flowgate`; the parent side is
`flowgate.sandbox`.
"""
