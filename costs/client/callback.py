"""The litellm callback: every finished call (success or failure) becomes one queued usage record.

Register it with ``litellm.callbacks = [SpendguardCallback()]``. litellm runs the sync success
hook on its logging thread pool, the sync failure hook on the caller's thread and the async hooks
on the event loop, so each hook only builds a small dict and queues it; sending happens on the
reporter's own thread (:mod:`costs.client.worker`). A hook never raises into litellm.

``log_pre_api_call`` only notes the call as in flight so that ``flush()`` can wait for its report:
litellm swallows exceptions raised there (it cannot stop a call — see the enforcing wrappers in
:mod:`costs.client.enforcement` for that).
"""

import logging
from typing import TYPE_CHECKING, Any

from litellm.integrations.custom_logger import CustomLogger

from costs.client.records import usage_from_call

if TYPE_CHECKING:
    from costs.client.client import Spendguard

logger = logging.getLogger("spendguard.client")


class SpendguardCallback(CustomLogger):
    """Reports each litellm call to Spendguard through ``client`` (default: the client configured
    by :func:`costs.client.configure`, or from the environment on first use)."""

    def __init__(self, client: "Spendguard | None" = None) -> None:
        super().__init__()
        self._client = client
        # litellm de-duplicates callbacks by class name and public str/int attributes: two
        # callbacks for two different clients must not collapse into one.
        self.client_id = client.client_id if client is not None else "default"

    @property
    def client(self) -> "Spendguard":
        if self._client is None:
            from costs.client.client import default_client

            self._client = default_client()
        return self._client

    def log_pre_api_call(self, model, messages, kwargs):
        try:
            call_id = kwargs.get("litellm_call_id")
            if call_id:
                self.client.reporter.call_started(str(call_id))
        except Exception:
            logger.exception("Spendguard callback failed (pre-call); the call goes on.")

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    def _record(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool) -> None:
        try:
            client = self.client
            record = usage_from_call(kwargs, response_obj, start_time, end_time, failed=failed, config=client.config)
            call_id = kwargs.get("litellm_call_id")
            client.reporter.report(record, call_id=str(call_id) if call_id else None)
        except Exception:  # reporting must never break or slow the agent's call
            logger.exception("Spendguard callback failed; this call's usage is not recorded.")
