"""FairIntake (cloud_api/mqtt/intake.py): lockers take turns, and each has a token budget."""

from cloud_api.mqtt.intake import FairIntake


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lockers_take_turns_whatever_one_of_them_queued():
    intake: FairIntake[str] = FairIntake(rate=0, burst=1)
    for n in range(1000):
        assert intake.put("A", f"a{n}")
    intake.put("B", "b0")
    intake.put("C", "c0")
    taken = [intake.get(0) for _ in range(5)]
    assert taken == ["a0", "b0", "c0", "a1", "a2"]
    assert intake.qsize() == 997


def test_budget_refuses_and_counts_beyond_the_burst_then_refills():
    clock = Clock()
    intake: FairIntake[int] = FairIntake(rate=10, burst=5, clock=clock)
    taken = [intake.put("A", n) for n in range(8)]
    assert taken == [True] * 5 + [False] * 3
    assert intake.put("B", 0)  # another locker's budget is its own
    assert intake.take_refused() == {"A": 3}
    assert intake.take_refused() == {}
    clock.now += 0.25  # 2.5 tokens back
    assert [intake.put("A", n) for n in range(3)] == [True, True, False]
    clock.now += 100  # never more than the burst
    assert sum(intake.put("A", n) for n in range(10)) == 5


def test_close_hands_out_what_is_queued_then_none():
    intake: FairIntake[str] = FairIntake(rate=0, burst=1)
    intake.put("A", "a0")
    intake.close()
    assert intake.closed and intake.get(0) == "a0" and intake.get(0) is None
    intake.reopen()
    assert not intake.closed
