"""The teacher's content-addressed cache: one small JSON object per (endpoint, messages, sampling, sample).

The stages keep it in the run directory (``cache/teacher/``), outside any stage folder, so neither
``--force`` nor a change of retrieval or training settings ever pays for a rationale twice. Each entry is
written as soon as its response arrives, in one atomic put, so a killed job loses at most the
requests that were in flight.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from kard_ray.artifacts import RunDir


def cache_key(identity: str, model: str, messages: list[dict[str, str]], sampling: dict[str, Any], sample: int) -> str:
    blob = json.dumps({"endpoint": identity, "model": model, "messages": messages, "sampling": sampling,
                       "sample": sample}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class TeacherCache:
    """Entries under the folder ``uri`` (a path or URI), 256 subfolders by key prefix."""

    def __init__(self, uri: str):
        self.uri = uri
        self.run = RunDir(uri)

    @staticmethod
    def _rel(key: str) -> str:
        return f"{key[:2]}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        rel = self._rel(key)
        if not self.run.exists(rel):
            return None
        try:
            return json.loads(self.run.read_bytes(rel))
        except (OSError, ValueError):
            return None  # an unreadable entry is a miss, never an error

    def put(self, key: str, entry: dict[str, Any]) -> None:
        # no fsync: an entry must survive a killed job, and a lost machine only costs a re-request
        self.run.write_bytes(self._rel(key), json.dumps({**entry, "cached_at": time.time()}).encode(), durable=False)
