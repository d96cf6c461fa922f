"""The workflow context: VMs and appliances, operation requests held for review by an outside workflow
tool, continue/cancel, pending tasks (seed 002, DESIGN §3.3). Wired by flowgate.wiring."""
