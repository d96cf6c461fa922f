"""devstack: Flowgate's local stack (`make run`), built from `template.yaml`.

moto in server mode holds the state, a local API Gateway (waitress) serves the template's routes, and
the functions' handlers run in worker processes, one event at a time each, as in Lambda's execution
environments, fed by the template's routes, schedules, queues and custom resources.

Entry points for other code:
- `python -m devstack [--port N] [--template T] [--parameter-overrides "K=V ..."]` (what `make run` calls);
- `start_stack(...)`: the same as a child process, for e2e tests (several stacks side by side);
- `create_table_from_template(...)`: the template's table inside `moto.mock_aws`, for handler tests;
- `load_template(...)`, `provision(...)`: the typed template model and the resources it describes.
"""

from devstack.launcher import StackProcess, start_stack
from devstack.provision import AwsClients, create_table_from_template, provision
from devstack.stack import LocalStack, StackConfig
from devstack.template import Template, load_template

__all__ = [
    "AwsClients",
    "LocalStack",
    "StackConfig",
    "StackProcess",
    "Template",
    "create_table_from_template",
    "load_template",
    "provision",
    "start_stack",
]
