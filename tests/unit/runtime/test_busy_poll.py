"""transport/busy_poll.py: after an answer the loop polls instead of sleeping, never while a request waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_runtime.transport.busy_poll import BusyPoll


def test_after_an_answer_the_loop_keeps_turning_until_the_window_ends() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        poll = BusyPoll(0.05)
        poll.answered(loop, "client")
        assert poll._polling
        deadline = loop.time() + 30
        while poll._polling and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert not poll._polling, "polling stops once the window is over"
        assert 0 < poll.polled_s < 30

    asyncio.run(main())


def test_no_polling_while_a_request_waits_then_again_within_the_window() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        poll = BusyPoll(60.0)
        release = loop.create_future()

        async def waits() -> None:
            await release

        task = loop.create_task(waits())
        poll.track(task)
        poll.answered(loop, "client")  # another request's answer: this one still waits on its model run
        assert not poll._polling and poll.waiting == 1
        release.set_result(None)
        await task
        await asyncio.sleep(0)  # the task's done callbacks run
        assert poll.waiting == 0 and poll._polling, "it is done, and the window is still open: poll again"
        # A request that waits stops the polling in progress at its next turn.
        blocked = loop.create_future()

        async def waits_too() -> None:
            await blocked

        second = loop.create_task(waits_too())
        poll.track(second)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not poll._polling
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        poll.window_s = 0.0  # ends the window; polling stops at its next turn
        poll._until = 0.0
        for _ in range(3):
            await asyncio.sleep(0)
        assert not poll._polling

    asyncio.run(main())


def test_a_zero_window_never_polls() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        poll = BusyPoll(0)
        task = loop.create_task(asyncio.sleep(0))
        poll.track(task)
        poll.answered(loop, "client")
        await task
        assert not poll._polling and poll.waiting == 0 and poll.polled_s == 0

    asyncio.run(main())


def test_the_flag_takes_microseconds_and_names_a_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime import cli

    parser = cli.build_parser()
    base = ["serve", "--model", "m.onnx", "--sha256", "0" * 64, "--name", "m"]
    assert parser.parse_args(base).busy_poll_us == 500
    assert parser.parse_args([*base, "--busy-poll-us", "0"]).busy_poll_us == 0
    for bad, why in (("-1", "must be from 0 to 100000"), ("100001", "must be from 0 to 100000"),
                     ("1.5", "must be a whole number")):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--busy-poll-us", bad])
        err = capsys.readouterr().err
        assert "argument --busy-poll-us" in err and why in err and "microseconds" in err


def test_answers_to_several_clients_within_a_window_stop_the_polling() -> None:
    """Polling is for a client waiting on one answer at a time; answers to two clients within a window mean
    the loop has work coming anyway, so it sleeps until a window passes with one client again."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        poll = BusyPoll(60.0)
        poll.answered(loop, "a")
        poll.answered(loop, "a")
        assert poll._polling
        poll.answered(loop, "b")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not poll._polling
        poll.answered(loop, "b")  # one client again, but within the window of the two
        await asyncio.sleep(0)
        assert not poll._polling
        # No two clients for a whole window (it ended): one client's answers start polling again.
        poll._shared_until = time.monotonic() - 1  # the clock BusyPoll keeps (not uvloop's loop.time())
        poll.answered(loop, "b")
        assert poll._polling

    asyncio.run(main())
