"""In-process Lambda "containers": handler module instances pooled per function.

Lambda runs one event at a time per container and keeps containers warm. Handler modules here hold
module-level state that is not thread-safe (powertools resolvers keep the current event), so each
concurrent invocation gets its own instance of the module, loaded by file path under a unique name;
a finished instance goes back to the pool for the next event, like a warm container.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.model import FunctionSpec

log = logging.getLogger(__name__)

MAX_INSTANCES_PER_FUNCTION = 4

Handler = Callable[[Any, Any], Any]
Invoke = Callable[[str, Any], Any]  # invoke(function logical id, event) -> the handler's result


@dataclass
class LambdaContext:
    """The context object Lambda passes to a Python handler (the attributes powertools reads)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    log_group_name: str
    log_stream_name: str
    aws_request_id: str
    deadline: float  # time.monotonic() at which Lambda would stop the invocation
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's Timeout."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    @classmethod
    def for_function(
        cls, name: str, *, timeout_seconds: float = 15, memory_mb: int = 512, region: str = "us-east-1"
    ) -> LambdaContext:
        """A fresh context for one invocation of the function `name`."""
        return cls(
            function_name=name,
            invoked_function_arn=f"arn:aws:lambda:{region}:123456789012:function:{name}",
            memory_limit_in_mb=memory_mb,
            log_group_name=f"/aws/lambda/{name}",
            log_stream_name=f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}",
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + timeout_seconds,
        )


@dataclass
class FunctionInstance:
    """One loaded copy of a function's handler module."""

    module_name: str
    handler: Handler


class FunctionPool:
    """Up to `max_instances` module instances of one function, each serving one event at a time."""

    def __init__(self, spec: FunctionSpec, max_instances: int = MAX_INSTANCES_PER_FUNCTION) -> None:
        self.spec = spec
        self._max_instances = max_instances
        self._free: list[FunctionInstance] = []
        self._loaded = 0  # instances loaded or being loaded
        self._loads_started = 0  # numbers the instances' module names
        self._available = threading.Condition()

    @property
    def instance_count(self) -> int:
        """How many instances have been loaded so far."""
        with self._available:
            return self._loaded

    def invoke(self, event: Any) -> Any:
        """Run the handler on `event` in a free instance, as Lambda would; exceptions propagate."""
        with self.instance() as instance:
            return instance.handler(event, self.context())

    def context(self) -> LambdaContext:
        """A fresh Lambda context for one invocation."""
        context = LambdaContext.for_function(
            self.spec.name, timeout_seconds=self.spec.timeout_seconds, memory_mb=self.spec.memory_mb
        )
        context.invoked_function_arn = self.spec.arn
        return context

    @contextmanager
    def instance(self) -> Iterator[FunctionInstance]:
        """Borrow an instance: a free one, a newly loaded one, or the next one to be returned."""
        instance = self._take_or_reserve()
        if isinstance(instance, int):
            try:
                instance = self._load(instance)
            except BaseException:
                with self._available:
                    self._loaded -= 1
                    self._available.notify()
                raise
        try:
            yield instance
        finally:
            with self._available:
                self._free.append(instance)
                self._available.notify()

    def _take_or_reserve(self) -> FunctionInstance | int:
        """A free instance, or the number of a new instance the caller must load."""
        with self._available:
            while not self._free and self._loaded >= self._max_instances:
                self._available.wait()
            if self._free:
                return self._free.pop()
            self._loaded += 1
            self._loads_started += 1
            return self._loads_started - 1

    def _load(self, number: int) -> FunctionInstance:
        # The short random part keeps names unique when a process loads the same function twice (tests).
        module_name = f"devstack_fn_{self.spec.logical_id}_{number}_{uuid.uuid4().hex[:6]}"
        module = load_handler_module(self.spec, module_name)
        function_name = self.spec.handler.rpartition(".")[2]
        handler = getattr(module, function_name, None)
        if not callable(handler):
            raise ImportError(f"{self.spec.logical_id}: {module.__file__} has no function {function_name!r}")
        log.info("%s: loaded handler instance %s", self.spec.logical_id, module_name)
        return FunctionInstance(module_name, handler)


def load_handler_module(spec: FunctionSpec, module_name: str) -> ModuleType:
    """Import a function's handler module from its CodeUri by file path, under `module_name`."""
    module_path = spec.handler.rpartition(".")[0]
    path = spec.code_uri.joinpath(*module_path.split(".")).with_suffix(".py")
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None or not path.is_file():
        raise ImportError(f"{spec.logical_id}: handler module {path} not found")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running so that dataclasses/pydantic can find the module by name.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


class FunctionRuntime:
    """The pools of every function of the stack, by logical id."""

    def __init__(
        self, functions: Mapping[str, FunctionSpec], max_instances: int = MAX_INSTANCES_PER_FUNCTION
    ) -> None:
        self.pools = {logical_id: FunctionPool(spec, max_instances) for logical_id, spec in functions.items()}

    def invoke(self, function_id: str, event: Any) -> Any:
        """Invoke a function's handler with `event`."""
        return self.pools[function_id].invoke(event)

    def warm_up(self) -> list[str]:
        """Load one instance of every function now; return the ids of those that failed to load.

        A function that cannot be imported is logged and left broken (its invocations fail), as a
        deployed function with an import error would be; the other functions still serve.
        """
        failed = []
        for function_id, pool in self.pools.items():
            try:
                with pool.instance():
                    pass
            except Exception:
                log.exception("%s: the handler cannot be loaded", function_id)
                failed.append(function_id)
        return failed


def add_layer_paths(functions: Iterable[FunctionSpec]) -> list[Path]:
    """Put the functions' layer directories on sys.path, as Lambda does with /opt/python.

    Returns the directories that were added.
    """
    added: list[Path] = []
    for spec in functions:
        for path in spec.layer_paths:
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
                added.append(path)
    return added
