"""Storage of the workflow context in the platform table, one module per kind of item:

* `keys` - every key and index attribute (docs/access-patterns.md, "Approval workflow");
* `records` - the storage models, apart from the domain models they become;
* `resources` - virtual machines, appliances, operation bindings;
* `settings` - platform properties, enterprise settings and usage;
* `tasks` - operation requests, tasks, the holds' tokens, the decision audit, pending listings;
* `writes` - the write expressions they share.

Items, conditions and update expressions stay in this package: the use cases speak in records.
"""
