"""The on-disk spool: usage the server could not take yet, kept until it can, across restarts.

One directory per (server, API key) — records spooled under one key are never replayed under
another. Each client instance appends JSON lines to its own file ``spool-<pid>-<id>.jsonl``. To
send a file, the reporting thread first *claims* it by renaming it to ``claimed-<pid>-<id>-<n>.jsonl``
(an atomic rename, so two processes never send the same file), sends it, then deletes it; what it
could not send goes back into its own spool file. Besides its own file, a client claims the files
left by processes that are gone (a crash, or an exit while the server was down), so the next run of
an agent delivers what the previous one could not. Replays are harmless: every record carries its
request id, and the server records a request id once.

The directory's total size is capped (``max_bytes``): records that do not fit are dropped with a
warning naming how many and why — the only place the client ever loses usage.
"""

import contextlib
import hashlib
import itertools
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

logger = logging.getLogger("spendguard.client")

# Without a portable "is this process alive" test, a foreign file untouched this long is orphaned.
_ORPHAN_AGE_SECONDS = 3600


def spool_directory(base: Path, *, url: str, api_key: str) -> Path:
    """``base`` / a directory named after the server and key (a hash: the key itself is secret)."""
    digest = hashlib.sha256(f"{url}\n{api_key}".encode()).hexdigest()[:16]
    return base / digest


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        self._owner = f"{self._pid}-{uuid.uuid4().hex[:8]}"
        self.path = directory / f"spool-{self._owner}.jsonl"
        self._claims = itertools.count(1)
        self._lock = threading.Lock()
        self.dropped = 0

    def append(self, records: list[dict]) -> int:
        """Write ``records`` to this client's spool file; returns how many fit under the cap."""
        lines = [json.dumps(record, separators=(",", ":")) + "\n" for record in records]
        with self._lock:
            used = self.size()
            fitting = 0
            for line in lines:
                if used + len(line.encode()) > self.max_bytes:
                    break
                used += len(line.encode())
                fitting += 1
            if fitting:
                with open(self.path, "a", encoding="utf-8") as spool_file:
                    spool_file.writelines(lines[:fitting])
                    spool_file.flush()
                    os.fsync(spool_file.fileno())  # the point of a spool is to survive a crash
            dropped = len(lines) - fitting
            self.dropped += dropped
        if dropped:
            first = records[fitting].get("request_id")
            logger.warning(
                "Spendguard spool is full (%d of %d bytes used in %s): DROPPED %d usage record(s) "
                "(first request_id %r). They will not be recorded. Restore the connection to the "
                "Spendguard server or raise spool_max_bytes / SPENDGUARD_SPOOL_MAX_BYTES.",
                used,
                self.max_bytes,
                self.directory,
                dropped,
                first,
            )
        return fitting

    def size(self) -> int:
        total = 0
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):  # claimed or sent meanwhile
                total += path.stat().st_size
        return total

    def pending(self) -> bool:
        """Is there a file this client may send (its own, or an orphan)?"""
        return any(self._claimable(path) for path in self._files())

    def claim(self) -> Path | None:
        """Take a file to send (atomically renamed so nobody else sends it), or None."""
        with self._lock:  # our own appends create a new file after this rename, never extend the claimed one
            for path in sorted(self._files()):
                if not self._claimable(path):
                    continue
                target = self.directory / f"claimed-{self._owner}-{next(self._claims)}.jsonl"
                try:
                    os.rename(path, target)
                except FileNotFoundError:  # another process claimed it first
                    continue
                return target
        return None

    def read(self, claimed: Path) -> list[dict]:
        records = []
        with open(claimed, encoding="utf-8") as spool_file:
            for number, line in enumerate(spool_file, start=1):
                try:
                    records.append(json.loads(line))
                except ValueError:  # a line cut short by a crash while writing
                    logger.warning("Spendguard spool %s: line %d is not JSON; skipped.", claimed, number)
        return records

    def give_back(self, claimed: Path, records: list[dict]) -> None:
        """Put the unsent ``records`` of a claimed file back into this client's spool file."""
        if records:
            lines = [json.dumps(record, separators=(",", ":")) + "\n" for record in records]
            with self._lock, open(self.path, "a", encoding="utf-8") as spool_file:
                spool_file.writelines(lines)  # already counted against the cap inside the claimed file
                spool_file.flush()
                os.fsync(spool_file.fileno())
        claimed.unlink(missing_ok=True)

    def discard(self, claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir() if p.suffix == ".jsonl" and p.name.count("-") >= 2]
        except FileNotFoundError:
            return []

    def _claimable(self, path: Path) -> bool:
        if path == self.path:
            return True
        try:
            pid = int(path.name.split("-")[1])
        except ValueError:
            return False
        if pid == self._pid:
            return False  # another client of this process, alive by definition
        if os.name == "posix":
            try:
                os.kill(pid, 0)  # signal 0: only asks whether the process exists
            except ProcessLookupError:
                return True
            except PermissionError:  # exists, owned by someone else
                return False
            return False
        try:
            return time.time() - path.stat().st_mtime > _ORPHAN_AGE_SECONDS
        except FileNotFoundError:
            return False
