"""Usage import (backfill, migration): JSONL or CSV files into the ledger through :func:`usage_ingest`.

Each line (JSONL) or row (CSV, a header naming usage-object fields) is a usage object as the API
takes it (DESIGN.md, "Usage object"), or — JSONL only — litellm's *standard logging payload* (what
litellm hands its loggers as ``standard_logging_object``), mapped here to a usage object. Lines go
to :func:`usage_ingest` in batches, so they are validated, attributed, priced and settled exactly as
over the API, and importing a file twice writes nothing the second time (request ids).

litellm payloads get the request ids the agent client (``costs.client``) reports live calls under —
``litellm_call_id``, plus ``:error`` for a failed call — so usage tracked live and imported later
from litellm's logs is one row, not two.
"""

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from config.errors import OutOfScope, ValidationFailed
from costs.models import ApiKey, Organization
from costs.services.ingest import usage_ingest

_INT_FIELDS = {"prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens"}
_INT_FIELDS |= {"latency_ms"}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Kept equal to costs/client/records.py (the client must not import server code, nor this module
# the client, which imports litellm); tests/costs/test_import_usage.py checks the two agree.
ERROR_SUFFIX = ":error"
_OPERATIONS = {
    **dict.fromkeys(("completion", "acompletion"), "chat"),
    **dict.fromkeys(("text_completion", "atext_completion"), "completion"),
    **dict.fromkeys(("embedding", "aembedding"), "embedding"),
    **dict.fromkeys(("responses", "aresponses"), "responses"),
    **dict.fromkeys(("image_generation", "aimage_generation"), "image_generation"),
    **dict.fromkeys(("transcription", "atranscription"), "audio_transcription"),
    **dict.fromkeys(("speech", "aspeech"), "audio_speech"),
    **dict.fromkeys(("rerank", "arerank"), "rerank"),
    **dict.fromkeys(("moderation", "amoderation"), "moderation"),
}


@dataclass
class ImportReport:
    """What one import did. ``invalid``: ``(line number, {field: [messages]})`` in file order."""

    lines: int = 0
    written: int = 0
    replayed: int = 0
    invalid: list[tuple[int, dict]] = field(default_factory=list)


@dataclass(frozen=True)
class _Unreadable:
    message: str


def usage_import(
    *,
    organization: Organization,
    rows: Iterable[tuple[int, Any]],
    project: str | None = None,
    agent: str | None = None,
    batch_size: int = 1000,
) -> ImportReport:
    """Ingest ``rows`` (``(line number, usage object or litellm payload)``, e.g. from
    :func:`usage_file_rows`) into ``organization``'s ledger.

    Written as an organization-scoped API key would write: records name their project and agent
    (``project`` / ``agent`` fill in those that do not; unknown agent names are registered). The
    scope is an *unsaved* organization ``ApiKey``: no credential is created for an import.

    Each batch is its own transaction. Invalid lines are reported with their errors and skipped —
    the rest of their batch is written. A request id repeated inside the file counts as a replay.
    """
    scope_key = ApiKey(organization=organization, name="import_usage")
    report = ImportReport()
    batch: list[tuple[int, dict]] = []
    ids_in_batch: set[str] = set()
    for line, raw in rows:
        report.lines += 1
        if isinstance(raw, _Unreadable):
            report.invalid.append((line, {"non_field_errors": [raw.message]}))
            continue
        record = usage_from_litellm_payload(raw) if is_litellm_payload(raw) else raw
        if isinstance(record, dict):
            for name, default in (("project", project), ("agent", agent)):
                if default is not None and record.get(name) is None:
                    record = {**record, name: default}
        request_id = record.get("request_id") if isinstance(record, dict) else None
        if request_id in ids_in_batch:  # a repeat must land in a later batch, where it is a replay
            _ingest(scope_key, batch, report)
            batch, ids_in_batch = [], set()
        batch.append((line, record))
        if isinstance(request_id, str):
            ids_in_batch.add(request_id)
        if len(batch) >= batch_size:
            _ingest(scope_key, batch, report)
            batch, ids_in_batch = [], set()
    if batch:
        _ingest(scope_key, batch, report)
    report.invalid.sort(key=lambda item: item[0])
    return report


def _ingest(scope_key: ApiKey, batch: list[tuple[int, Any]], report: ImportReport) -> None:
    """Ingest ``batch``; on validation errors set the bad lines aside and ingest the others
    (usage_ingest reports every bad record of a phase at once, so this ends in a few rounds)."""
    pending = batch
    while pending:
        try:
            ingested = usage_ingest(api_key=scope_key, records=[record for _, record in pending])
        except (ValidationFailed, OutOfScope) as exc:
            per_record = exc.fields.get("records")
            if not isinstance(per_record, dict) or not per_record:
                raise
            bad = {int(index) for index in per_record}
            report.invalid += [(pending[index][0], per_record[str(index)]) for index in bad]
            pending = [item for index, item in enumerate(pending) if index not in bad]
            continue
        for item in ingested:
            if item.replayed:
                report.replayed += 1
            else:
                report.written += 1
        return


# --- reading files ----------------------------------------------------------------------------


def usage_file_rows(path: str, *, file_format: str = "auto") -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` of a JSONL or CSV file (``-``: standard input), one at a time.
    ``file_format``: ``jsonl``, ``csv`` or ``auto`` (by extension; otherwise JSONL when the first
    character is ``{``). An unreadable line yields a marker that the import reports as invalid."""
    import sys

    handle = sys.stdin if path == "-" else open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
    try:
        if file_format == "auto":
            file_format = _guess_format(path, handle)
        yield from (_csv_rows(handle) if file_format == "csv" else _jsonl_rows(handle))
    finally:
        if handle is not sys.stdin:
            handle.close()


def _guess_format(path: str, handle: io.TextIOBase) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if handle.seekable():
        start = handle.read(4096).lstrip()
        handle.seek(0)
        return "jsonl" if start.startswith("{") else "csv"
    return "jsonl"


def _jsonl_rows(handle) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            yield number, _Unreadable(f"Not valid JSON: {exc}.")


def _csv_rows(handle) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(handle)
    for row in reader:
        if None in row:
            yield reader.line_num, _Unreadable("More cells than the header has columns.")
            continue
        yield reader.line_num, {key: _cell(key, value) for key, value in row.items() if value not in ("", None)}


def _cell(key: str, value: str) -> Any:
    """A CSV cell as the JSON value it stands for; left as text when it is not one (validation
    then names the problem)."""
    if key in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value
    if key == "batch":
        return _BOOLEANS.get(value.strip().lower(), value)
    if key == "tags":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --- litellm's standard logging payload -------------------------------------------------------


def is_litellm_payload(raw: Any) -> bool:
    return isinstance(raw, dict) and "call_type" in raw and "request_id" not in raw


def usage_from_litellm_payload(payload: dict) -> dict:
    """A litellm ``StandardLoggingPayload`` as a usage object. Attribution comes from the
    payload's ``spend_logs_metadata`` / ``requester_metadata`` (``project``, ``sprint``, ``agent``,
    ``tags``) when present; ``request_tags`` become tags."""
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    failed = payload.get("status") == "failure"
    call_id = payload.get("litellm_call_id") or payload.get("id")
    record: dict[str, Any] = {
        "request_id": f"{call_id}{ERROR_SUFFIX}" if failed and isinstance(call_id, str) else call_id,
        "model": payload.get("model"),
        "provider": payload.get("custom_llm_provider") or None,
        "operation": _OPERATIONS.get(str(payload.get("call_type")), "other"),
        "status": "error" if failed else "success",
        **_payload_tokens(payload, metadata.get("usage_object")),
    }
    tags = {str(tag): True for tag in payload.get("request_tags") or [] if isinstance(tag, str)}
    for key in ("spend_logs_metadata", "requester_metadata"):
        extra = metadata.get(key)
        if isinstance(extra, dict):
            for name in ("project", "sprint", "agent"):
                record.setdefault(name, extra.get(name))
            if isinstance(extra.get("tags"), dict):
                tags.update(extra["tags"])
    if tags:
        record["tags"] = tags
    start, end = payload.get("startTime"), payload.get("endTime")
    if _is_number(start):
        record["occurred_at"] = datetime.fromtimestamp(start, tz=UTC).isoformat()
        if _is_number(end) and end >= start:
            record["latency_ms"] = round((end - start) * 1000)
    if isinstance(payload.get("end_user"), str) and payload["end_user"]:
        record["end_user"] = payload["end_user"]
    cost = payload.get("response_cost")
    if _is_number(cost) and math.isfinite(cost) and cost >= 0:
        record["provider_cost_usd"] = format(Decimal(repr(cost)).normalize(), "f")
    return {key: value for key, value in record.items() if value is not None}


def _payload_tokens(payload: dict, usage: Any) -> dict:
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = payload.get("prompt_tokens", 0), payload.get("completion_tokens", 0)
    tokens = {"prompt_tokens": prompt, "completion_tokens": completion}
    if type(prompt) is not int or type(completion) is not int:
        return tokens  # validation reports it
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    cached = _count(details.get("cached_tokens")) or _count(usage.get("cache_read_input_tokens"))
    writes = _count(usage.get("cache_creation_input_tokens")) or _count(details.get("cache_creation_tokens"))
    output = usage.get("completion_tokens_details") if isinstance(usage.get("completion_tokens_details"), dict) else {}
    reasoning = _count(output.get("reasoning_tokens"))
    # Clamped as the client does: litellm's parts never exceed its totals, but a record refused
    # for it would be lost for good.
    cached = min(cached, prompt)
    for name, value in (
        ("cached_tokens", cached),
        ("cache_creation_tokens", min(writes, prompt - cached)),
        ("reasoning_tokens", min(reasoning, completion)),
    ):
        if value > 0:
            tokens[name] = value
    return tokens


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
