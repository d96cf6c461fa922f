"""The one Logger every module uses. No Tracer: the X-Ray SDK costs ~240 ms of cold start, and
`Tracing: Active` in the template already records each invocation's segment."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "flowgate")
