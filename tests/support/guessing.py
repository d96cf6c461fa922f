"""Password guessing from many threads at once: how the login throttle is tested and benchmarked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

THREADS = 16
ATTEMPTS = 8  # per thread


def guess_concurrently(
    authenticator: Any, usernames: Callable[[int, int], str], source_ip: str
) -> dict[str, int]:
    """THREADS threads, released together, each making ATTEMPTS wrong logins (`usernames(thread, attempt)`)
    from `source_ip`: how many were answered 401 and how many 429."""
    from flowgate.errors import TooManyRequests, Unauthorized  # here: the benchmarks' parent has no `shared`

    outcomes = {"401": 0, "429": 0}
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def guesser(thread: int) -> None:
        start.wait()
        for attempt in range(ATTEMPTS):
            try:
                authenticator.login(usernames(thread, attempt), f"guess-{thread}-{attempt}", source_ip)
            except Unauthorized:
                outcome = "401"
            except TooManyRequests:
                outcome = "429"
            with lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=guesser, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
