"""Cold import time of each function's handler module against what any powertools REST handler pays.

Cold start is mostly imports (DESIGN §6), so each handler is measured against a baseline: a fresh
interpreter importing boto3, pydantic, powertools' Logger and APIGatewayRestResolver. Goal: handler /
baseline <= 1.0 (medians).

How, and why:
* Each sample is a fresh interpreter timing only the import, with `time.perf_counter` (not
  `-X importtime`, which slows imports down unevenly).
* The handler is loaded by file path as Lambda does (its CodeUri first on `sys.path`, then `shared/` as
  the layer; the venv's site-packages stand for the dependencies layer), under the template's
  environment with `TABLE_NAME=bench` and `AWS_DEFAULT_REGION=us-east-1`.
* The sources are copied to a scratch build directory and compiled there with
  `compileall --invalidation-mode unchecked-hash`, like the SAM build (DESIGN §6). Not in place:
  unchecked-hash `.pyc` files are never checked against their source, so compiling the working tree
  would make later runs and tests import stale code after an edit.
* Subjects are interleaved (the order rotates every round) after warm-up rounds, so drift in machine
  load falls on all of them alike.

`python benchmarks/import_time.py --offenders identity` lists what a handler imports beyond the
baseline, by cumulative time (`-X importtime`), to see where an OVER comes from.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

if __package__ in {None, ""}:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import Options, Row

GOAL = 1.0
BASELINE = "baseline"
BASELINE_IMPORTS = (
    "import boto3\n"
    "import pydantic\n"
    "from aws_lambda_powertools import Logger\n"
    "from aws_lambda_powertools.event_handler import APIGatewayRestResolver\n"
)
LAMBDA_ENV = {"TABLE_NAME": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
PROBE_TIMEOUT_SECONDS = 120

# The probe prints the seconds spent importing; interpreter start-up is not counted.
_PROBE = """\
import importlib.util, sys, time
sys.path[:0] = {paths!r}
t0 = time.perf_counter()
{body}
t1 = time.perf_counter()
print(repr(t1 - t0))
"""
_LOAD_BY_PATH = """\
spec = importlib.util.spec_from_file_location({module!r}, {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules[{module!r}] = module
spec.loader.exec_module(module)
"""


# ---- the template ------------------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags (`!Ref X` -> {"Ref": "X"}, `!Sub` -> Fn::Sub)."""


def _construct_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


@dataclass(frozen=True)
class Function:
    name: str  # the logical id, e.g. IdentityFunction
    code_dir: Path  # CodeUri, relative to the repo root
    module: str  # the handler's module, e.g. "app"
    environment: dict[str, str]


def _env_value(value: Any, parameters: Mapping[str, Any]) -> str | None:
    if isinstance(value, str | int | float | bool):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"}:
        default = parameters.get(str(value["Ref"]), {}).get("Default")
        return None if default is None else str(default)
    return None  # !GetAtt, !Sub...: no value without a deployed stack


def discover_functions(root: Path) -> list[Function]:
    """Every `AWS::Serverless::Function` of template.yaml with its code dir, module and env."""
    template = yaml.load((root / "template.yaml").read_text(), Loader=CfnLoader)  # noqa: S506 (SafeLoader subclass)
    parameters = template.get("Parameters") or {}
    global_env = (
        ((template.get("Globals") or {}).get("Function") or {}).get("Environment", {}).get("Variables", {})
    )
    functions = []
    for name, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        handler = str(props.get("Handler", ""))
        if "." not in handler or not isinstance(props.get("CodeUri"), str):
            raise ValueError(f"{name}: expected a CodeUri directory and a module.function Handler")
        env_vars = {**global_env, **((props.get("Environment") or {}).get("Variables") or {})}
        environment = {k: v for k, raw in env_vars.items() if (v := _env_value(raw, parameters)) is not None}
        functions.append(Function(name, Path(props["CodeUri"]), handler.rsplit(".", 1)[0], environment))
    return functions


# ---- measuring -----------------------------------------------------------------------------------------


@contextmanager
def build_dir(root: Path, python: str) -> Iterator[Path]:
    """A scratch copy of shared/ and functions/, compiled as the SAM build compiles them."""
    with tempfile.TemporaryDirectory(prefix="flowgate-bench-") as tmp:
        build = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
        for part in ("shared", "functions"):
            shutil.copytree(root / part, build / part, ignore=ignore)
        subprocess.run(
            [
                python,
                "-m",
                "compileall",
                "-q",
                "--invalidation-mode",
                "unchecked-hash",
                "shared",
                "functions",
            ],
            cwd=build,
            check=True,
        )
        yield build


def _probe(build: Path, function: Function | None) -> tuple[str, list[str]]:
    """The probe's source and the directory to run it in, for a function or (None) the baseline."""
    if function is None:
        return _PROBE.format(paths=[], body=BASELINE_IMPORTS), []
    code_dir = build / function.code_dir
    path = code_dir / (function.module.replace(".", "/") + ".py")
    body = _LOAD_BY_PATH.format(module=function.module, path=str(path))
    return _PROBE.format(paths=[str(code_dir), str(build / "shared")], body=body), [str(code_dir)]


def _environment(function: Function | None) -> dict[str, str]:
    env = {**os.environ, **(function.environment if function else {}), **LAMBDA_ENV}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPATH", None)
    return env


def sample(python: str, build: Path, function: Function | None, *extra_args: str) -> tuple[float, str]:
    """One fresh interpreter: (seconds spent importing, stderr)."""
    source, cwd = _probe(build, function)
    done = subprocess.run(
        [python, *extra_args, "-c", source],
        cwd=cwd[0] if cwd else build,
        env=_environment(function),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        subject = function.name if function else BASELINE
        raise RuntimeError(f"importing {subject} failed:\n{done.stderr.strip()[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1]), done.stderr


def run(options: Options) -> list[Row]:
    functions = discover_functions(options.root)
    subjects: list[Function | None] = [None, *functions]
    samples: dict[str, list[float]] = {BASELINE: [], **{f.name: [] for f in functions}}
    with build_dir(options.root, options.python) as build:
        for round_no in range(options.warmup + options.rounds):
            shift = round_no % len(subjects)
            for subject in subjects[shift:] + subjects[:shift]:  # rotate the order every round
                seconds, _ = sample(options.python, build, subject)
                if round_no >= options.warmup:
                    samples[subject.name if subject else BASELINE].append(seconds * 1000)

    base = statistics.median(samples[BASELINE])

    def row(name: str, function: Function | None) -> Row:
        ms = samples[name]
        median = statistics.median(ms)
        figures: dict[str, float | int | str] = {
            "median_ms": median,
            "min_ms": min(ms),
            "max_ms": max(ms),
            "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
            "n": len(ms),
            "ratio": median / base,
        }
        verdict = None if function is None else ("PASS" if median / base <= GOAL else "OVER")
        notes: dict[str, Any] = {"samples_ms": [round(x, 2) for x in ms]}
        if function is not None:
            notes["handler"] = f"{function.code_dir.as_posix()}/{function.module.replace('.', '/')}.py"
        return Row(name, figures, verdict, f"median ratio to baseline <= {GOAL}", notes)

    return [row(BASELINE, None), *(row(f.name, f) for f in functions)]


# ---- what a handler imports beyond the baseline ----------------------------------------------------------


def _importtime(stderr: str) -> dict[str, tuple[int, int, int]]:
    """`-X importtime` output -> {module: (self_us, cumulative_us, depth)}."""
    found: dict[str, tuple[int, int, int]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line.removeprefix("import time:").split("|", 2)
        depth = (len(name) - len(name.lstrip(" "))) // 2
        found.setdefault(name.strip(), (int(self_us), int(cumulative), depth))
    return found


def offenders(options: Options, function_name: str, top: int = 20) -> list[tuple[str, int, int, int]]:
    """Modules the handler imports that the baseline does not: (module, cumulative_us, self_us, depth)."""
    wanted = [f for f in discover_functions(options.root) if function_name.lower() in f.name.lower()]
    if not wanted:
        raise SystemExit(f"no function matches {function_name!r}")
    with build_dir(options.root, options.python) as build:
        sample(options.python, build, None)  # warm the OS file cache
        _, base_err = sample(options.python, build, None, "-X", "importtime")
        _, handler_err = sample(options.python, build, wanted[0], "-X", "importtime")
    baseline, handler = _importtime(base_err), _importtime(handler_err)
    extra = [(m, cum, own, depth) for m, (own, cum, depth) in handler.items() if m not in baseline]
    return sorted(extra, key=lambda item: -item[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Imports of a handler beyond the baseline (-X importtime).")
    parser.add_argument("--offenders", metavar="FUNCTION", required=True, help="e.g. identity")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    options = Options(root=Path(__file__).resolve().parent.parent, python=sys.executable)
    rows = offenders(options, args.offenders, args.top)
    print(f"{'cumulative_us':>13}  {'self_us':>8}  module (indented by import depth)")
    for module, cumulative, own, depth in rows:
        print(f"{cumulative:>13}  {own:>8}  {'  ' * depth}{module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
