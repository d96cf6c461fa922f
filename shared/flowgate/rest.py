"""What the REST functions' entry modules share: who is calling.

Above the composition root (it reaches the authenticator through `flowgate.wiring`); only the functions
under `functions/` import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowgate.wiring import container

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

    from flowgate.identity.ports import Principal


def caller(app: APIGatewayRestResolver) -> Principal:
    """The principal behind the current request's Authorization header (Bearer or Basic); HTTP Basic's
    password attempts are throttled by the caller's address, API Gateway's `identity.sourceIp`."""
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    return container().authenticator.authenticate(
        app.current_event.headers.get("authorization"), identity.get("sourceIp")
    )
