"""Real threads against the real database, for the concurrency claims (budgets, idempotency, sync)."""

import threading
from collections.abc import Callable

from django.db import connection


def run_together(calls: list[Callable]) -> list:
    """Run ``calls`` in threads released at the same moment (each on its own database connection);
    return their results in order. The first exception raised in a thread is re-raised here."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list = []

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = calls[index]()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results
