"""The run-time variables context: a workspace's variables (name -> plain-text value, not secret) and the
built-in ones, written `%NAME%` inside artifact fields (a connector's value, a propagated artifact's
paths). Wired by flowgate.wiring; other contexts reach it through a port of their own.
"""
