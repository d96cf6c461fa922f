"""The child side of the flow-script sandbox: `forkserver.py` is the warm fork server (one per runner
process) that forks a keeper and a script process per run, `bootstrap.py` the code the script process runs
(it confines itself with `seccomp.py`'s filter, then runs the script), and `flow_api.py` the module flow
scripts import.

All are standard library only: the sandboxed interpreter runs with `-I -S`, so site-packages (boto3 and the
rest of this package's dependencies) are out of its reach. They never import `flowgate`; the parent side is
`flowgate.sandbox`.
"""
