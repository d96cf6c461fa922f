"""The flows context: flows, executions, and the runner that executes them in the sandbox.
Wired by flowgate.wiring."""
