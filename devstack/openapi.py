"""The API description of the whole application, produced from the code.

Each REST function's powertools resolver describes its own routes (request and response models come
from the pydantic types of the handlers). This merges them into one OpenAPI document, written into
the SharedLayer (`shared/flowgate/openapi.json`) so that `GET /api/latest/openapi.json` serves it
without importing every function. `python -m devstack.openapi --check` fails when the file is stale;
`--write` renews it. The template's routes and the resolvers' routes must be the same set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from devstack.lambdas import add_layer_paths, load_handler_module
from devstack.model import FunctionSpec
from devstack.provision import DEFAULT_TEMPLATE
from devstack.template import load_template

DOCUMENT = DEFAULT_TEMPLATE.parent / "shared" / "flowgate" / "openapi.json"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "basic": {"type": "http", "scheme": "basic"},
}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _resolver_document(spec: FunctionSpec) -> dict[str, Any]:
    module = load_handler_module(spec, f"openapi_{spec.logical_id}")
    try:
        app = module.app
        return dict(json.loads(app.get_openapi_json_schema(title="Flowgate API", version="latest")))
    finally:
        sys.modules.pop(f"openapi_{spec.logical_id}", None)


def build_document(template_path: Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """One OpenAPI 3.1 document for every REST function of the template."""
    functions = [f for f in load_template(template_path).functions() if f.api_routes]
    add_layer_paths(functions)
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for spec in sorted(functions, key=lambda f: f.logical_id):
        part = _resolver_document(spec)
        for path, operations in part.get("paths", {}).items():
            for method, operation in operations.items():
                if method in paths.get(path, {}):
                    raise ValueError(f"{method.upper()} {path} is routed by two functions")
                paths.setdefault(path, {})[method] = operation
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two functions define the schema {name} differently")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Flowgate API",
            "version": "latest",
            "summary": "Native API of the Flowgate automation platform",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": []}, {"basic": []}],
    }


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in document["paths"].items() for m in ops if m in METHODS}


def template_routes(template_path: Path = DEFAULT_TEMPLATE) -> set[tuple[str, str]]:
    return {(r.method, r.path) for f in load_template(template_path).functions() for r in f.api_routes}


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="renew shared/flowgate/openapi.json")
    args = parser.parse_args()
    document = build_document()
    text = render(document)
    undocumented = template_routes() - documented_routes(document) - {("GET", "/api/latest/openapi.json")}
    if undocumented:
        sys.stderr.write(f"template routes no resolver serves: {sorted(undocumented)}\n")
        return 1
    if args.write:
        DOCUMENT.write_text(text)
        return 0
    if not DOCUMENT.is_file() or DOCUMENT.read_text() != text:
        sys.stderr.write(f"{DOCUMENT} is stale: run `make openapi`\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
