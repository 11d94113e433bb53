"""The background loop the API lifespan starts, with the console provider."""

import asyncio
import logging

from sqlalchemy import create_engine

from cloud_api.sms.dispatcher import SmsDispatcher
from cloud_api.sms.providers import ConsoleProvider
from tests.cloud_api.sms.conftest import MASTER
from tests.cloud_api.sms.helpers import TO, add_pickup, expected_code, row


def test_run_forever_sends_and_stops_on_the_event(engine, caplog):
    console = ConsoleProvider()
    dispatcher = SmsDispatcher(engine, console, master_secret=MASTER, digits=8)
    first = add_pickup(engine, "one")

    async def scenario() -> None:
        stop = asyncio.Event()
        loop_task = asyncio.create_task(dispatcher.run_forever(stop, interval=0.05))
        try:
            for _ in range(200):
                if console.inbox():
                    break
                await asyncio.sleep(0.02)
            # A message enqueued while the loop runs is picked up on a later pass.
            add_pickup(engine, "two", counter=8)
            for _ in range(200):
                if len(console.inbox()) == 2:
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait_for(loop_task, 5)

    with caplog.at_level(logging.INFO, logger="cloud_api.sms.providers"):
        asyncio.run(scenario())
    newest, oldest = console.inbox(to=TO)
    assert expected_code(MASTER, 7) in oldest.body and expected_code(MASTER, 8) in newest.body
    assert row(engine, first).status == "sent" and row(engine, first).provider == "console"
    assert any(oldest.sid in r.getMessage() for r in caplog.records)


def test_console_inbox_is_bounded_and_finds_sent_copies():
    console = ConsoleProvider(capacity=3)
    sids = [console.send(TO, f"m{i}", None) for i in range(5)]
    assert [m.sid for m in console.inbox()] == sids[:1:-1]
    kept = console.inbox()[0]
    assert console.find_sent(TO, "m4", kept.sent_at) == [sids[4]]
    assert console.find_sent(TO, "m0", kept.sent_at) == []


def test_run_forever_survives_a_database_error(tmp_path, caplog):
    # A database without the table: every pass fails, the loop logs and keeps going.
    broken = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    dispatcher = SmsDispatcher(broken, ConsoleProvider(), master_secret=MASTER)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run_forever(stop, interval=0.01))
        for _ in range(300):
            if sum("SMS dispatch failed" in r.getMessage() for r in caplog.records) >= 2:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    try:
        with caplog.at_level(logging.ERROR, logger="cloud_api.sms.dispatcher"):
            asyncio.run(scenario())
    finally:
        broken.dispose()
    assert sum("SMS dispatch failed" in r.getMessage() for r in caplog.records) >= 2
