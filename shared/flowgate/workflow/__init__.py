"""The workflow context: VMs and appliances, operation requests held for review by an outside workflow
tool, continue/cancel, pending tasks (seed 002, DESIGN §3.3). Wired by flowgate.wiring.

One module per use case, each with one service class that gets what it needs:

* `settings` - platform properties and enterprise settings;
* `resources` - virtual machines and appliances; `bindings` - the flow bound to each operation;
* `operation_requests` - deploy / undeploy / reconfigure, and the holds;
* `decisions` - continue, cancel, and the timeout's default action;
* `announcements` - the holds' tokens and the webhook's bookkeeping (the webhook itself: `notifier`);
* `jobs` - starting a task's jobs and their outcome;
* `pending_tasks` - the pending listings; `tasks` - reading a task and its audit.

Beside them: `models` (the domain and the task DTO), `rules` (pure rules), `common` (input parsing),
`ports` and `adapters`, and `store` (items, keys and conditions, nowhere else).
"""
