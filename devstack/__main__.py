"""`python -m devstack`: run the local stack until SIGINT/SIGTERM (what `make run` calls)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from devstack.admin import ADMIN_SECRET_ID, admin_banner, admin_from_environment
from devstack.errors import DevstackError, StartupError
from devstack.naming import StackContext
from devstack.provision import DEFAULT_TEMPLATE
from devstack.stack import LocalStack, StackConfig
from devstack.template import load_template

log = logging.getLogger("devstack")

SCHEDULE_SECONDS_VARIABLE = "FLOWGATE_LOCAL_SCHEDULE_SECONDS"


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """Command-line options; defaults come from PORT, PARAMETER_OVERRIDES, TLS_CERT and TLS_KEY like
    `make run` passes them."""
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument(
        "--port", type=int, default=int(environ.get("PORT") or 3000), help="0 picks a free port"
    )
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument(
        "--parameter-overrides",
        default=environ.get("PARAMETER_OVERRIDES", ""),
        help='as for `sam deploy`, e.g. "Stage=dev LimitedWorkspaceMaxRuntime=5"',
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=environ.get("TLS_CERT") or None,
        help="serve HTTPS (only) with this PEM certificate (chain); needs --tls-key",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=environ.get("TLS_KEY") or None,
        help="its private key (PEM, unencrypted)",
    )
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--stack-name", default="flowgate-local")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=environ.get("DEVSTACK_LOG_LEVEL", "INFO"),
    )
    return parser.parse_args(argv)


def schedule_seconds(environ: Mapping[str, str]) -> float | None:
    """FLOWGATE_LOCAL_SCHEDULE_SECONDS as a positive number, if set."""
    raw = environ.get(SCHEDULE_SECONDS_VARIABLE)
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise StartupError(f"{SCHEDULE_SECONDS_VARIABLE} must be a positive number of seconds, got {raw!r}")
    return seconds


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGINT and SIGTERM take the same clean path as Ctrl-C in a terminal.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack; 0 after a clean shutdown, 1 when it cannot start."""
    args = parse_args(argv, os.environ)
    level = logging.getLevelNamesMapping()[args.log_level]
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # botocore tells at INFO where it found credentials and endpoints, on every client.
    logging.getLogger("botocore").setLevel(max(level, logging.WARNING))
    # Installed explicitly: a shell starts background jobs with SIGINT ignored, and Python then
    # leaves it ignored, while the stack's moto (same process group) would still stop on it.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        admin = admin_from_environment(os.environ)
        context = StackContext(stack_name=args.stack_name, region=args.region)
        template = load_template(args.template, args.parameter_overrides, context)
        has_admin = any(secret.logical_id == ADMIN_SECRET_ID for secret in template.secrets())
        config = StackConfig(
            template_path=args.template,
            port=args.port,
            parameter_overrides=args.parameter_overrides,
            context=context,
            schedule_seconds=schedule_seconds(os.environ),
            secret_values={ADMIN_SECRET_ID: admin.secret_string()} if has_admin and admin else {},
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
        with LocalStack(config, template) as stack:
            if has_admin:
                sys.stdout.write(
                    admin_banner(stack.secret_string(ADMIN_SECRET_ID), given=admin is not None) + "\n"
                )
            sys.stdout.write(
                f"Flowgate local stack listening on {stack.url} (moto on :{stack.moto.port}; "
                "state is in memory and is gone on restart)\n"
            )
            sys.stdout.flush()
            # Until SIGINT/SIGTERM raises KeyboardInterrupt, or moto goes away (a stack without it is
            # useless; it exits 0 when a signal to the whole process group stopped it first).
            code = stack.moto.wait()
    except DevstackError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("stopped")
        return 0
    if code != 0:
        log.error("the moto server exited with code %d; the stack stopped", code)
        return 1
    log.info("the moto server stopped; the stack stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
