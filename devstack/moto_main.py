"""moto's server with DynamoDB requests serialized, run as `python -m devstack.moto_main -p PORT`.

DynamoDB isolates each write: two conditional writes or transactions on one item never both pass their
conditions. moto checks and applies without a lock, so under concurrent requests both could succeed
(seen here: two 200s for the same `If-Match`). One lock around DynamoDB calls restores the real
behaviour; other services (Step Functions calls back into SQS from its own threads) are not held by it.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_DYNAMODB = threading.Lock()
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialize_dynamodb(app: WsgiApp) -> WsgiApp:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with _DYNAMODB:
                return list(app(environ, start_response))  # the body is produced inside the lock
        return app(environ, start_response)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host, args.port, serialize_dynamodb(app), threaded=True, request_handler=MotoRequestHandler
    )


if __name__ == "__main__":
    main()
