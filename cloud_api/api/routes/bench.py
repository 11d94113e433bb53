"""A bare endpoint for bench/api_bench.py: the same stack and the same single-row lookup as a
code check, without the service logic, so the benchmark can print their ratio. Mounted only
when ``XINBAO_BENCH_ROUTES=1``.

It authenticates like the integrator endpoints (the API key: one row read and a digest
compare, then the read transaction ends) and then reads one locker row, so the ratio shows
what the service logic costs on top of the stack, the credential check and one query.
"""

from fastapi import APIRouter

from cloud_api.api.deps import LockerIdPath, PrincipalDep, SessionDep
from cloud_api.errors import NotFound
from cloud_api.models.locker import Locker

router = APIRouter(prefix="/api/v1/_bench", tags=["bench"], include_in_schema=False)


@router.get("/lockers/{locker_id}")
def bare_locker(locker_id: LockerIdPath, session: SessionDep, who: PrincipalDep) -> dict:
    locker = session.get(Locker, locker_id)
    if locker is None:
        raise NotFound(f"no locker {locker_id!r}")
    return {"id": locker.id}
