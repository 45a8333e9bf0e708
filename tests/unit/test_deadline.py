"""resilience.Deadline: one timer bounding a run of waits, as
asyncio.timeout_at around each wait bounds it."""

from __future__ import annotations

import asyncio

import pytest

from slatewise.resilience.deadline import Deadline


async def _ticks(delays):
    for i, delay in enumerate(delays):
        await asyncio.sleep(delay)
        yield i


def test_waits_that_end_in_time_return_each_item():
    async def main():
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop.time() + 5)
        items = _ticks([0.001] * 4)
        got = [await deadline.next(items) for _ in range(4)]
        with pytest.raises(StopAsyncIteration):
            await deadline.next(items)
        deadline.close()
        return got

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_a_wait_still_under_way_at_the_deadline_times_out():
    async def main():
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop.time() + 0.05)
        items = _ticks([0.001, 10.0])
        first = await deadline.next(items)
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await deadline.next(items)
        waited = loop.time() - t0
        assert asyncio.current_task().cancelling() == 0  # our cancel was taken back
        await asyncio.sleep(0)  # and nothing else is pending for the task
        return first, waited

    first, waited = asyncio.run(main())
    assert first == 0
    assert waited < 1.0


def test_the_deadline_never_cancels_the_callers_own_awaits_between_waits():
    async def main():
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop.time() + 0.02)
        items = _ticks([0.0, 0.0])
        await deadline.next(items)
        await asyncio.sleep(0.06)  # past the deadline, outside a wait: not cancelled
        assert deadline.expired
        with pytest.raises(TimeoutError):  # the next wait is refused at once
            await deadline.next(items)

    asyncio.run(main())


def test_a_cancel_from_outside_stays_a_cancel():
    async def main():
        loop = asyncio.get_running_loop()

        async def waiter():
            deadline = Deadline(loop.time() + 0.05)
            try:
                await deadline.next(_ticks([10.0]))
            finally:
                deadline.close()

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        task.cancel()  # the caller went away before the deadline
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.06)  # the disarmed timer does not fire into anything

    asyncio.run(main())


def test_a_cancel_from_outside_at_the_deadline_is_not_swallowed():
    async def main():
        loop = asyncio.get_running_loop()

        async def waiter():
            deadline = Deadline(loop.time() + 0.02)
            try:
                await deadline.next(_ticks([10.0]))
            finally:
                deadline.close()

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        # The caller's cancel due about when the deadline is: whichever of
        # the two the loop runs first, the caller's is not made a timeout.
        loop.call_at(loop.time() + 0.01, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_close_disarms_the_timer():
    async def main():
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop.time() + 0.01)
        deadline.close()
        await asyncio.sleep(0.03)
        assert not deadline.expired
        assert await deadline.next(_ticks([0.0])) == 0

    asyncio.run(main())
