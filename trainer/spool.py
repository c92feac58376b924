"""The client's disk spool: an ordered, durable queue of HTTP requests in one folder.

Each request is one file `<seq>.<kind>.req`: a JSON header line (method, path, params, content
type, run id) followed by the raw body. `put` writes a temporary file, fsyncs it, renames it into
place and fsyncs the folder, so after `put` returns the request survives a crash of the process
or the machine, and a half-written request is never seen (a crash leaves only a `.tmp-*` file,
removed at the next open). Sequence numbers only grow, across restarts too, so the oldest request
is always the first name in sort order. An exclusive lock keeps a second process out: two writers
would interleave sequence numbers. Delivery policy lives in trainer/client.py. Beside the entries,
`run-keys.json` maps the keys of runs created through the spool to their ids once the server made them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


RUN_KEYS = "run-keys.json"


class SpoolBusy(RuntimeError):
    """Another process holds this spool folder: two writers would interleave sequence numbers."""


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    path: Path


class Spool:
    """Ordered, durable request queue in a folder: `<seq>.<kind>.req` = JSON header line + body."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.rejected_dir = self.root / "rejected"
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise SpoolBusy(f"spool {self.root} is in use by another process; give each worker its own --spool") from exc
        for stale in self.root.glob(".tmp-*"):  # a crash mid-write leaves only these; the entry was never put
            stale.unlink(missing_ok=True)
        seqs = [self._seq(p.name) for p in (*self.root.glob("*.req"), *self.rejected_dir.glob("*.req"))]
        self._next = max(seqs, default=0) + 1
        self._mutex = threading.Lock()

    @staticmethod
    def _seq(name: str) -> int:
        return int(name.split(".", 1)[0])

    def put(self, kind: str, header: dict[str, Any], body: bytes = b"", body_file: Path | None = None) -> int:
        """Durably append one request; returns its sequence number."""
        with self._mutex:
            seq = self._next
            self._next += 1
        final = self.root / f"{seq:012d}.{kind}.req"
        tmp = self.root / f".tmp-{seq:012d}"
        with open(tmp, "wb") as f:
            f.write(json.dumps({"seq": seq, "kind": kind, **header}).encode() + b"\n")
            if body_file is not None:
                with open(body_file, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            else:
                f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)  # atomic: the sender never sees a half-written entry
        self._fsync_dir()
        return seq

    def _fsync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[Entry]:
        out = []
        with os.scandir(self.root) as it:
            for d in it:
                if d.name.endswith(".req") and not d.name.startswith("."):
                    seq_s, kind, _ = d.name.split(".", 2)
                    out.append(Entry(int(seq_s), kind, Path(d.path)))
        out.sort(key=lambda e: e.seq)
        return out

    def count(self) -> int:
        return len(self.entries())

    @staticmethod
    def read(entry: Entry) -> tuple[dict[str, Any], int, int]:
        """(header, body offset, body size)."""
        with open(entry.path, "rb") as f:
            header = json.loads(f.readline())
            offset = f.tell()
        return header, offset, entry.path.stat().st_size - offset

    @staticmethod
    def body_bytes(entry: Entry, offset: int) -> bytes:
        with open(entry.path, "rb") as f:
            f.seek(offset)
            return f.read()

    @staticmethod
    def body_stream(entry: Entry, offset: int) -> Iterator[bytes]:
        with open(entry.path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 20):
                yield chunk

    def remove(self, entry: Entry) -> None:
        entry.path.unlink(missing_ok=True)

    def reject(self, entry: Entry, reason: str) -> Path:
        dest = self.rejected_dir / entry.path.name
        os.replace(entry.path, dest)
        (self.rejected_dir / (entry.path.name + ".reason.txt")).write_text(reason + "\n")
        self._fsync_dir()
        return dest

    def rejected(self) -> list[Path]:
        return sorted(self.rejected_dir.glob("*.req"))

    def requeue_rejected(self) -> int:
        """Put rejected entries back (after the operator fixed the cause); they keep their order."""
        n = 0
        for p in self.rejected():
            os.replace(p, self.root / p.name)
            (self.rejected_dir / (p.name + ".reason.txt")).unlink(missing_ok=True)
            n += 1
        return n

    # --- runs created through the spool (client.create_run): key -> run id, kept beside the entries ---
    def load_run_keys(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads((self.root / RUN_KEYS).read_text()).items()}
        except FileNotFoundError:
            return {}

    def save_run_keys(self, keys: dict[str, int]) -> None:
        """Atomically, like an entry: a crash leaves the old mapping or the new one, never half of one."""
        tmp = self.root / f".tmp-{RUN_KEYS}"
        with open(tmp, "w") as f:
            json.dump(keys, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / RUN_KEYS)
        self._fsync_dir()

    def close(self) -> None:
        self._lock_file.close()
