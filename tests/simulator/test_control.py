"""HTTP control API: state, tester actions, faults, truth; bad input gets a 4xx, changes nothing."""

from __future__ import annotations

import httpx
import pytest

from simulator import BoardSpec


@pytest.fixture
def api(make_sim):
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=1, channels=4))
    base = sim.start_control("127.0.0.1", 0)
    with httpx.Client(base_url=base, timeout=5) as client:
        yield sim, client


def test_boards_and_door_and_items(api):
    sim, client = api
    boards = client.get("/boards").json()["boards"]
    assert boards[0]["address"] == 1 and len(boards[0]["channels"]) == 4
    assert (
        client.post("/faults", json={"board": 1, "fault": "forced_open", "channel": 2}).status_code
        == 201
    )
    r = client.post("/boards/1/channels/2/item", json={"action": "put"})
    assert r.status_code == 200 and r.json()["items"] == 1
    r = client.post("/boards/1/channels/2/door", json={"action": "close"})
    assert r.status_code == 200 and r.json()["door_open"] is False
    assert sim.compartment(1, 2).occupied
    assert "<table>" in client.get("/").text


def test_faults_and_truth(api):
    sim, client = api
    r = client.post("/faults", json={"board": 1, "fault": "slow", "params": {"seconds": 1.5}})
    assert r.status_code == 201 and r.json()["params"] == {"seconds": 1.5}
    assert client.get("/faults").json()["faults"][0]["fault"] == "slow"
    assert client.delete("/faults").json() == {"cleared": 1}
    assert sim.faults() == []
    events = client.get("/truth", params={"kind": "fault_injected"}).json()["events"]
    assert events[0]["data"]["fault"] == "slow"
    last = client.get("/truth").json()["last_seq"]
    assert client.get("/truth", params={"since": last}).json()["events"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/boards/1/channels/2/door", {"action": "fly"}, 400),
        ("POST", "/boards/1/channels/2/door", {"action": "open"}, 409),  # latched
        ("POST", "/boards/1/channels/9/door", {"action": "open"}, 404),
        ("POST", "/boards/5/channels/1/door", {"action": "open"}, 404),
        ("POST", "/boards/1/channels/2/item", {"action": "put"}, 409),  # door shut
        ("POST", "/boards/1/channels/2/item", {"action": 3}, 400),
        ("POST", "/faults", {"board": 1, "fault": "melted"}, 400),
        ("POST", "/faults", {"board": "one", "fault": "absent"}, 400),
        ("POST", "/faults", {"board": 1, "fault": "absent", "channel": 2}, 400),
        ("POST", "/faults", {"board": 1, "fault": "slow", "params": {"seconds": "x"}}, 400),
        ("POST", "/faults", {"board": 1, "fault": "slow", "params": {"board": 2}}, 400),
        ("POST", "/faults", {"board": 1}, 400),
        ("POST", "/faults", {"board": 1, "fault": "absent", "extra": 1}, 400),
        ("POST", "/faults", [1, 2], 400),
        ("GET", "/truth?since=abc", None, 400),
        ("GET", "/truth?kind=nope", None, 400),
        ("GET", "/nowhere", None, 404),
        ("PUT", "/boards", None, 405),
        ("GET", "/boards/1/channels/1/door", None, 405),
    ],
)
def test_bad_input_is_4xx_json_and_changes_nothing(api, method, path, body, status):
    sim, client = api
    before = (sim.snapshot(), sim.faults())
    r = client.request(method, path, json=body)
    assert r.status_code == status
    assert isinstance(r.json()["error"], str)
    assert (sim.snapshot(), sim.faults()) == before


def test_malformed_json_and_left_open(api):
    sim, client = api
    r = client.post("/faults", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    client.post("/faults", json={"board": 1, "fault": "forced_open", "channel": 1})
    client.post("/faults", json={"board": 1, "fault": "left_open", "channel": 1})
    r = client.post("/boards/1/channels/1/door", json={"action": "close"})
    assert r.status_code == 409 and sim.compartment(1, 1).door_open
