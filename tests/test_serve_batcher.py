"""DrainBatcher (serve/batcher.py): batches are what queued while the model was busy; no Ray needed."""

import asyncio
import threading

import pytest

from serve.batcher import DrainBatcher


class GatedModel:
    """A batch function whose first call blocks until ``release``: requests pile up meanwhile."""

    def __init__(self, fail_on=None):
        self.calls: list[list] = []
        self.gate, self.entered, self.fail_on = threading.Event(), threading.Event(), fail_on

    def __call__(self, items):
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.entered.set()
            self.gate.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [f"out-{i}" for i in items]


async def _pile_up(batcher: DrainBatcher, model: GatedModel, first, rest):
    """Submit ``first``, wait until the model is busy with it, queue ``rest``, then let the model go."""
    tasks = [asyncio.create_task(batcher.submit(first))]
    await asyncio.to_thread(model.entered.wait, 10)
    tasks += [asyncio.create_task(batcher.submit(i)) for i in rest]
    await asyncio.sleep(0.05)  # the submits reach the queue
    model.gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_requests_queued_while_busy_form_the_next_batch():
    model = GatedModel()
    out = asyncio.run(_pile_up(DrainBatcher(model, max_batch_size=16), model, 0, [1, 2, 3, 4, 5]))
    assert out == [f"out-{i}" for i in range(6)]
    assert model.calls == [[0], [1, 2, 3, 4, 5]]  # a lone request starts alone; the pile is one batch


def test_max_batch_size_splits_the_pile():
    model = GatedModel()
    out = asyncio.run(_pile_up(DrainBatcher(model, max_batch_size=2), model, 0, [1, 2, 3, 4, 5]))
    assert out == [f"out-{i}" for i in range(6)]
    assert model.calls == [[0], [1, 2], [3, 4], [5]]


def test_an_error_reaches_every_caller_of_its_batch_and_the_loop_goes_on():
    model = GatedModel(fail_on=3)

    async def scenario():
        batcher = DrainBatcher(model, max_batch_size=2)
        first = await _pile_up(batcher, model, 0, [1, 2, 3, 4])
        return first, await batcher.submit(9)

    (results, later) = asyncio.run(scenario())
    assert results[:3] == ["out-0", "out-1", "out-2"]
    assert all(isinstance(r, ValueError) and "bad item 3" in str(r) for r in results[3:])  # 4 shared 3's batch
    assert model.calls == [[0], [1, 2], [3, 4], [9]]
    assert later == "out-9"


def test_a_caller_that_went_away_is_left_out_of_the_batch():
    model = GatedModel()

    async def scenario():
        batcher = DrainBatcher(model, max_batch_size=16)
        busy = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(model.entered.wait, 10)
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.05)
        gone.cancel()
        model.gate.set()
        return await busy, await kept, gone.cancelled()

    assert asyncio.run(scenario()) == ("out-0", "out-2", True)
    assert model.calls == [[0], [2]]


def test_a_batch_function_that_drops_results_is_an_error_not_a_hang():
    async def scenario():
        return await DrainBatcher(lambda items: items[:-1], max_batch_size=4).submit("x")

    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        asyncio.run(scenario())


def test_wait_ms_collects_company_for_a_lone_request():
    calls = []

    def model(items):
        calls.append(list(items))
        return items

    async def scenario():
        batcher = DrainBatcher(model, max_batch_size=8, wait_ms=200)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.02)  # "b" arrives inside a's window
        return await asyncio.gather(first, batcher.submit("b"))

    assert asyncio.run(scenario()) == ["a", "b"]
    assert calls == [["a", "b"]]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_size"):
        DrainBatcher(lambda items: items, max_batch_size=0)
