"""A plain amqtt broker accepts ``$share/...`` filters but never delivers on them: the bridge's
probe notices and falls back to plain subscriptions, and events still arrive."""

import asyncio
import threading

import pytest
from amqtt.broker import Broker

from tests.e2e.conftest import LOCKER_ID
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import free_port, listening, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def amqtt_port():
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="amqtt", daemon=True)
    thread.start()

    async def start() -> Broker:
        # amqtt's Broker makes futures in its constructor: build it on the loop it runs on,
        # not in the main thread (which may have no current loop after other tests).
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}}
        broker = Broker(config)
        await broker.start()
        return broker

    broker = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    wait_until(lambda: listening(port), 10, "amqtt to listen")
    yield port
    try:
        asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
    finally:
        # Whatever shutdown left behind (a client handler it waited on) is cancelled, so the
        # loop thread always ends.
        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_probe_falls_back_on_amqtt(amqtt_port, make_cloud, db_url):
    # amqtt_port first: set up first, torn down last, after the cloud has disconnected (amqtt's
    # shutdown can hang on a client still connected).
    cloud = make_cloud(db_url, f"mqtt://127.0.0.1:{amqtt_port}")
    assert cloud.bridge.shared is False
    locker = FakeLocker(amqtt_port, LOCKER_ID, cloud.locker_key())
    try:
        ev = locker.event("door_closed", 2)
        wait_until(
            lambda: cloud.stored_event(ev.event_id), 10, "the event through the plain subscription"
        )
    finally:
        locker.close()
