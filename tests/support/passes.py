"""Staff passes for tests: what the cloud would issue (xinbao.staff_pass), made from a key."""

import time

from xinbao import staff_pass


def pass_now(locker_key: bytes, locker_id: str, staff_no: str, counter: int = 0) -> str:
    """The pass for ``staff_no`` at ``locker_id`` issued now, numbered ``counter``."""
    window = staff_pass.window_of(time.time())
    return staff_pass.pass_for(
        staff_pass.derive_pass_key(locker_key), locker_id, staff_no, window, counter
    )
