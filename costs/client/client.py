"""``Spendguard``: one configured client — the callback, the reporter, the spool, the enforcing wrappers."""

import asyncio
import atexit
import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from costs.client.callback import SpendguardCallback
from costs.client.config import ClientConfig
from costs.client.enforcement import Enforcer
from costs.client.spool import Spool, spool_directory
from costs.client.transport import Transport
from costs.client.worker import Reporter

logger = logging.getLogger("spendguard.client")


class Spendguard:
    """Track (and optionally enforce budgets on) every litellm call of this process.

    Every argument defaults to its ``SPENDGUARD_*`` environment variable (:mod:`costs.client.config`).
    ``litellm.callbacks = [client.callback]`` tracks plain litellm calls; ``client.completion(...)``
    and friends also check the budget first (and register the callback if it is not yet).
    """

    def __init__(self, *, register_atexit: bool = True, **settings: Any) -> None:
        self.config = ClientConfig.resolve(**settings)
        self.client_id = uuid.uuid4().hex
        config = self.config
        self.transport = Transport(
            url=config.url,
            api_key=config.api_key,
            send_timeout=config.send_timeout,
            check_timeout=config.check_timeout,
        )
        self.spool = Spool(
            spool_directory(config.spool_dir, url=config.url, api_key=config.api_key),
            max_bytes=config.spool_max_bytes,
        )
        self.reporter = Reporter(config, transport=self.transport, spool=self.spool)
        self.enforcer = Enforcer(config, self.transport)
        self.callback = SpendguardCallback(self)
        self._closed = False
        self._atexit = register_atexit
        if register_atexit:
            atexit.register(self._at_exit)

    @property
    def stats(self) -> dict:
        return self.reporter.stats

    # --- enforcing wrappers: same arguments and results as litellm's functions -----------------

    def completion(self, model: str, messages: list | None = None, **kwargs: Any) -> Any:
        import litellm

        call = self._admit({**kwargs, "model": model, "messages": messages or []})
        with self._reported_or_failed(call):
            return litellm.completion(**call)

    async def acompletion(self, model: str, messages: list | None = None, **kwargs: Any) -> Any:
        import litellm

        call = await asyncio.to_thread(self._admit, {**kwargs, "model": model, "messages": messages or []})
        with self._reported_or_failed(call):
            return await litellm.acompletion(**call)

    def embedding(self, model: str, input: Any = None, **kwargs: Any) -> Any:
        import litellm

        call = self._admit({**kwargs, "model": model, "input": input or []}, embedding=True)
        with self._reported_or_failed(call):
            return litellm.embedding(**call)

    async def aembedding(self, model: str, input: Any = None, **kwargs: Any) -> Any:
        import litellm

        call = await asyncio.to_thread(self._admit, {**kwargs, "model": model, "input": input or []}, embedding=True)
        with self._reported_or_failed(call):
            return await litellm.aembedding(**call)

    def _admit(self, call: dict, *, embedding: bool = False) -> dict:
        self.install()
        call = self.enforcer.admit(call, embedding=embedding)
        self.reporter.call_started(call["litellm_call_id"])  # so flush() waits for its report
        return call

    @contextlib.contextmanager
    def _reported_or_failed(self, call: dict) -> Iterator[None]:
        """A call that raises is no longer awaited by flush(): litellm has reported its failure
        by then (sync), or aflush() collects it from litellm's queue (async) — or, when litellm
        refused the arguments before starting, there is nothing to report."""
        try:
            yield
        except BaseException:
            self.reporter.call_ended(call["litellm_call_id"])
            raise

    # --- lifecycle ----------------------------------------------------------------------------

    def install(self) -> None:
        """Register this client's callback with litellm (once)."""
        import litellm

        if not any(getattr(cb, "_client", None) is self for cb in litellm.callbacks):
            litellm.callbacks.append(self.callback)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every call made so far is reported and sent (True), or the server could not
        take it all or time ran out (False: the rest is queued or spooled and sent later). A
        stream not yet read to its end has not finished: flush waits for it until ``timeout``.
        Sync code only; in async code use :meth:`aflush`."""
        _run_orphaned_litellm_callbacks(timeout)
        return self.reporter.flush(timeout)

    async def aflush(self, timeout: float = 10.0) -> bool:
        """:meth:`flush` for async code: litellm delivers async callbacks on the event loop, so the
        loop must keep running while we wait."""
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        try:
            await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout)
        except Exception:  # a timeout or a litellm change: our own flush still reports the truth
            logger.debug("litellm logging worker flush failed", exc_info=True)
        return await asyncio.to_thread(self.reporter.flush, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued (spooling what the server does not take), stop the reporter,
        unregister from litellm. True when nothing was left unsent in memory."""
        if self._closed:
            return True
        self._closed = True
        if self._atexit:
            atexit.unregister(self._at_exit)
        _unregister(self.callback)
        done = self.reporter.close(self.config.exit_timeout if timeout is None else timeout)
        self.transport.close()
        return done

    def _at_exit(self) -> None:
        # litellm's own exit hook, which runs the async callbacks still queued, was registered
        # when litellm was imported — before ours, so it would run after ours (atexit is LIFO) and
        # its reports would miss our flush. Run it first. (Sync callbacks are done by now: the
        # interpreter joins litellm's logging threads before atexit handlers run.)
        try:
            from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

            GLOBAL_LOGGING_WORKER._flush_on_exit()
        except Exception:
            pass
        self.close()

    def __enter__(self) -> "Spendguard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_orphaned_litellm_callbacks(timeout: float) -> None:
    """Run async callbacks litellm queued on an event loop that has ended since.

    litellm runs async callbacks on the loop of the call. After ``asyncio.run(agent())`` returns
    they are still queued and would only run at exit — so a sync ``flush()`` right after would
    wait for reports that cannot come. litellm's worker carries a queue left by a closed loop onto
    the next one; this gives it one. A loop that is still alive (another thread's) is left alone.
    """
    try:
        asyncio.get_running_loop()
        return  # inside a loop: it runs them (aflush)
    except RuntimeError:
        pass
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:
        return
    loop = getattr(GLOBAL_LOGGING_WORKER, "_bound_loop", None)
    if loop is None or not loop.is_closed():
        return
    try:
        asyncio.run(asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), timeout))
    except Exception:  # a timeout or a litellm change: the exit hook still runs them
        logger.debug("could not run litellm's pending async callbacks", exc_info=True)


def _unregister(callback: SpendguardCallback) -> None:
    import litellm

    manager = getattr(litellm, "logging_callback_manager", None)
    if manager is not None:
        manager.remove_callback_from_all_lists(callback)
    elif callback in litellm.callbacks:
        litellm.callbacks.remove(callback)


_default: Spendguard | None = None
_default_lock = threading.Lock()


def configure(**settings: Any) -> Spendguard:
    """Set up the process-wide client (used by ``SpendguardCallback()`` and the module-level
    wrappers); replaces (and closes) a previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, Spendguard(**settings)
    if previous is not None:
        previous.close()
    return _default


def default_client() -> Spendguard:
    """The process-wide client, configured from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Spendguard()
        return _default
