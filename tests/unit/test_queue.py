"""The work queue: one worker per key, deduplication, delays, the earliest delay wins."""

import asyncio

from fleet.controller.queue import WorkQueue


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_key_added_many_times_is_handled_once_and_never_twice_at_once():
    async def scenario():
        queue = WorkQueue(asyncio.get_running_loop())
        running, seen, overlaps = set(), [], []

        async def handle(key):
            if key in running:
                overlaps.append(key)
            running.add(key)
            seen.append(key)
            await asyncio.sleep(0.01)
            running.discard(key)
            return

        workers = [asyncio.create_task(queue.worker(handle)) for _ in range(4)]
        for _ in range(10):
            queue.add("a")
        queue.add("b")
        await asyncio.sleep(0.005)
        queue.add("a")  # while in work: once more afterwards
        await asyncio.sleep(0.1)
        for worker in workers:
            worker.cancel()
        return seen, overlaps

    seen, overlaps = run(scenario())
    assert sorted(seen) == ["a", "a", "b"]
    assert overlaps == []


def test_delayed_adds_keep_the_earliest_and_a_requeue_comes_back():
    async def scenario():
        loop = asyncio.get_running_loop()
        queue = WorkQueue(loop)
        times = []

        async def handle(key):
            times.append(loop.time())
            return 0.05 if len(times) == 1 else None

        start = loop.time()
        worker = asyncio.create_task(queue.worker(handle))
        queue.add_after("k", 1.0)
        queue.add_after("k", 0.02)
        await asyncio.sleep(0.2)
        worker.cancel()
        return [t - start for t in times]

    times = run(scenario())
    assert len(times) == 2
    assert 0.02 <= times[0] < 0.5
    assert times[1] - times[0] >= 0.05
