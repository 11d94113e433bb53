"""Issue 10's model-based test: a seeded random walk over the real stack (cloud, Mosquitto,
the controller child process, the simulator) interleaving drop-offs, licence loads,
pickups, staff collects, cancellations, wrong codes, doors left open and a board going
silent and coming back; after each step it waits for quiet and checks that the cloud, the
cabinet and the simulated hardware agree on where every item is (tests/e2e/model_walk.py).

CI runs a few seeds for a bounded number of steps on each backend; ``bench/soak.py`` runs
the same walk long (it sets ``XINBAO_WALK_SEEDS``, ``XINBAO_WALK_STEPS``,
``XINBAO_WALK_RESTARTS`` and ``XINBAO_WALK_REPORT``). A failing seed's AssertionError lists
the steps that led to it.
"""

import json
import os

import pytest

from tests.e2e.model_walk import Walk
from tests.e2e.staffed_cabinet import (  # noqa: F401 (fixtures)
    controller,
    sim,
    staff_pass,
    uplink,
)

pytestmark = pytest.mark.slow

SEEDS = [int(s) for s in os.environ.get("XINBAO_WALK_SEEDS", "2,3").split(",") if s]
STEPS = int(os.environ.get("XINBAO_WALK_STEPS", "16"))
RESTARTS = os.environ.get("XINBAO_WALK_RESTARTS", "") == "1"


@pytest.mark.parametrize("seed", SEEDS)
def test_model_walk(seed, cloud, controller, sim, staff_pass, broker, uplink, tmp_path, request):
    walk = Walk(
        cloud,
        controller,
        sim,
        staff_pass,
        tmp_path / "controller" / "data",
        seed,
        restarts=RESTARTS,
        broker=broker,
        uplink=uplink,
    )
    error = ""
    try:
        counts = walk.run(STEPS)
    except AssertionError as exc:
        error = str(exc).splitlines()[0]
        raise
    finally:
        report = os.environ.get("XINBAO_WALK_REPORT")
        if report:
            with open(report, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "seed": seed,
                            "backend": request.node.callspec.params.get("db_url"),
                            "steps": walk.steps,
                            "counts": dict(walk.counts),
                            "error": error,
                            "failed": bool(error) or "check ground truth" not in walk.counts,
                        }
                    )
                    + "\n"
                )
    assert counts["check ground truth"] == 1
