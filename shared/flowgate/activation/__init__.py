"""Active flows of a workspace (seed 001, DESIGN §3.4): activation, message queues, and the enforcer
that stops a limited workspace's flows after the runtime limit. Wired by flowgate.wiring."""
