"""The one allocation rule both the cloud and the cabinet apply (xinbao/allocation.py)."""

from xinbao.allocation import (
    APPLICANT_MESSAGES,
    Choice,
    Slot,
    Unusable,
    applicant_reason,
    choose,
    deviation_text,
    numbers_text,
    staff_reason,
    unavailable,
    usable,
    why_not,
)


def cabinet(*changes: dict[int, dict]) -> list[Slot]:
    """The issue's cabinet: board 1 holds 1-4, board 2 holds 5-8; 3, 4, 7, 8 are L."""
    slots = []
    for n in range(1, 9):
        fields = {"size": "L" if n in (3, 4, 7, 8) else "M", "board": 1 if n <= 4 else 2}
        for change in changes:
            fields.update(change.get(n, {}))
        slots.append(Slot(number=n, **fields))
    return slots


def test_a_free_compartment_is_offered_and_the_lowest_first():
    assert usable(cabinet(), "L") == [3, 4, 7, 8]
    assert choose(cabinet(), "L") == Choice(3, None, None)
    assert not choose(cabinet(), "L").deviated


def test_each_reason_takes_a_compartment_out():
    free = Slot(4, "L", board=1)
    assert why_not(free, 9, "L") is None
    cases = {
        Unusable.BOARD_DOWN: Slot(4, "L", board_up=False),
        Unusable.JAMMED: Slot(4, "L", jammed=True),
        Unusable.OUT_OF_SERVICE: Slot(4, "L", in_service=False),
        Unusable.OCCUPIED: Slot(4, "L", occupied=True),
        Unusable.HELD: Slot(4, "L", holders=frozenset({7})),
        Unusable.BUSY: Slot(4, "L", busy=True),
        Unusable.WRONG_SIZE: Slot(4, "M"),
    }
    for reason, slot in cases.items():
        assert why_not(slot, 9, "L") is reason, slot


def test_a_sensed_item_wins_over_every_belief():
    # The store believes it empty and nobody holds it, but the sensor sees something.
    assert why_not(Slot(4, "L", sensed=True), 9, "L") is Unusable.OCCUPIED
    assert why_not(Slot(4, "L", sensed=False), 9, "L") is None
    # Not even the handover that holds it may open onto an item.
    assert why_not(Slot(4, "L", holders=frozenset({9}), occupied=True), 9) is Unusable.OCCUPIED


def test_the_holder_itself_may_use_its_compartment():
    slots = cabinet({4: {"holders": frozenset({11})}, 8: {"holders": frozenset({12})}})
    assert choose(slots, "L", handover_id=12, planned=8) == Choice(8, 8, None)
    # Another handover never gets a compartment someone else holds.
    assert choose(slots, "L", handover_id=13) == Choice(3, None, None)
    assert usable(slots, "L", handover_id=13) == [3, 7]


def test_the_issue_scenario_the_planned_door_on_a_dead_board():
    """Two L loads pending (4 for one record, 8 for the other) while board 2 is down: the
    load for 8 may not take 4 (held by the other) and cannot open 8; it goes to 3, and the
    choice says 8 was planned and why."""
    slots = cabinet(
        {n: {"board_up": False} for n in (5, 6, 7)},
        {4: {"holders": frozenset({1})}, 8: {"holders": frozenset({2}), "board_up": False}},
    )
    choice = choose(slots, "L", handover_id=2, planned=8)
    assert choice == Choice(3, 8, Unusable.BOARD_DOWN)
    assert choice.deviated
    assert deviation_text(choice) == (
        "compartment 3 used instead of 8: its lock board does not answer"
    )
    # With 3 taken too, nothing may be offered: never 4, never a dead board.
    slots = [s if s.number != 3 else Slot(3, "L", board=1, occupied=True) for s in slots]
    assert choose(slots, "L", handover_id=2, planned=8) == Choice(None, 8, Unusable.BOARD_DOWN)


def test_a_planned_compartment_the_cabinet_does_not_have():
    assert choose(cabinet(), "L", 5, planned=42) == Choice(3, 42, Unusable.UNKNOWN)


def test_the_planned_size_is_kept_when_the_handover_names_none():
    slots = cabinet({4: {"jammed": True}})
    assert choose(slots, None, 5, planned=4) == Choice(3, 4, Unusable.JAMMED)


def test_staff_are_told_which_board_and_which_door():
    slots = cabinet(
        {n: {"board_up": False} for n in (5, 6, 7, 8)},
        {3: {"jammed": True}, 4: {"occupied": True}},
    )
    assert unavailable(slots) == [
        "board 2 does not answer: compartments 5-8 unavailable",
        "compartment 3 jammed: unavailable until staff clear it",
    ]
    assert staff_reason(slots, "L") == (
        "no free compartment of size L: board 2 does not answer: compartments 7-8 unavailable;"
        " compartment 3 jammed: unavailable until staff clear it"
    )
    assert staff_reason(cabinet({n: {"occupied": True} for n in (3, 4, 7, 8)}), "L") == (
        "no free compartment of size L"
    )


def test_applicants_get_their_own_words_in_both_languages():
    full = cabinet({n: {"occupied": True} for n in range(1, 9)})
    assert applicant_reason(full, "L") == "no_free_compartment"
    down = cabinet({n: {"board_up": False} for n in (7, 8)}, {3: {"occupied": True}})
    key = applicant_reason(down, "L")
    assert key == "compartments_unavailable"
    zh, en = APPLICANT_MESSAGES[key]
    assert "维护" in zh and "repair" in en
    assert "board" not in en  # no hardware words for applicants


def test_numbers_read_as_ranges():
    assert numbers_text([8, 5, 6, 7]) == "5-8"
    assert numbers_text([3, 5, 6, 9]) == "3, 5-6, 9"
    assert numbers_text([4]) == "4"
