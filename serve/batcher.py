"""Dynamic batching that forms a batch when the model is free, not when a timer fires.

``@serve.batch`` closes a batch ``batch_wait_timeout_s`` after its first request, whether or not the model
is still busy with the previous one. On a CPU replica, where one batch takes seconds, that splits the
requests that pile up during a batch into many small batches run one after another (the demo's generator
under 32 clients), and a lone request still pays the whole wait. Here one loop runs one batch at a time and
takes everything queued (up to ``max_batch_size``) the moment the previous batch is done: a lone request
starts at once, and under load each batch holds what arrived while the last one ran, as continuous
batching servers do. ``wait_ms`` > 0 also waits that long for company after the first request (useful
where a bigger batch is nearly free, as on a GPU).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any


class DrainBatcher:
    """``await batcher.submit(item)`` -> ``fn(batch)[i]`` for the batch that carried ``item``. ``fn`` is
    blocking (a model call) and runs in a worker thread, so the event loop keeps taking requests; an
    exception in ``fn`` goes to every caller of that batch; callers that went away are left out."""

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch_size: int = 16, wait_ms: float = 0.0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.fn, self.max_batch_size, self.wait_s = fn, max_batch_size, max(0.0, wait_ms) / 1000
        self.on_batch = on_batch  # (batch size, seconds in fn): metrics
        self._queue: asyncio.Queue | None = None
        self._loop_task: asyncio.Task | None = None

    async def submit(self, item: Any) -> Any:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._loop_task is None or self._loop_task.done():  # first use, or the loop was cancelled
            self._loop_task = asyncio.get_running_loop().create_task(self._serve_batches())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        queue = self._queue
        batch = [await queue.get()]
        if self.wait_s and self.max_batch_size > 1:
            await asyncio.sleep(self.wait_s)
        while len(batch) < self.max_batch_size and not queue.empty():
            batch.append(queue.get_nowait())
        return [(item, fut) for item, fut in batch if not fut.done()]  # a cancelled caller's future is done

    async def _serve_batches(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            t = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except BaseException as exc:  # every caller of this batch gets the error; the loop goes on
                error = exc if isinstance(exc, Exception) else RuntimeError(f"batch stopped: {exc!r}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - t)
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
