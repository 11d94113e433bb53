"""A stolen cabinet: what its data file gives away. No TOTP secret (an older database's are
wiped on start), files readable by the cabinet's user only, and its passes work nowhere else."""

import os
import sqlite3
import stat
import time

import pyotp

from locker_controller.store import StaffMember, Store
from xinbao import staff_pass
from xinbao.codes import derive_locker_key

MASTER = bytes.fromhex("22" * 32)


def _file_bytes(path) -> bytes:
    found = b""
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name.exists():
            found += name.read_bytes()
    return found


def test_an_older_database_loses_its_totp_secrets_on_start(tmp_path):
    path = tmp_path / "data" / "controller.sqlite3"
    path.parent.mkdir()
    secret = pyotp.random_base32()
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute(
        "CREATE TABLE staff (staff_no TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "totp_secret TEXT NOT NULL, roles TEXT NOT NULL, last_step INTEGER NOT NULL DEFAULT -1)"
    )
    old.execute("INSERT INTO staff VALUES ('S001', 'Li', ?, '[\"admin\"]', -1)", (secret,))
    old.commit()
    old.close()
    assert secret.encode() in _file_bytes(path)  # the attack: read the copied file

    store = Store(path)
    store.replace_staff([StaffMember("S001", "Li", ["admin"], 0)])
    assert store.staff_member("S001") == StaffMember("S001", "Li", ["admin"], 0)
    store.close()
    assert secret.encode() not in _file_bytes(path)
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(staff)")}
    assert columns == {"staff_no", "name", "roles", "pass_floor"}


def test_data_files_are_private(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    loose = data / "controller.sqlite3"
    loose.touch(mode=0o644)
    os.chmod(loose, 0o644)  # left by an older version
    store = Store(loose)
    store.set_meta("x", "1")  # writes the WAL
    for name in (loose, loose.with_name(loose.name + "-wal"), loose.with_name(loose.name + "-shm")):
        assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    store.close()

    fresh = tmp_path / "new" / "state" / "controller.sqlite3"
    Store(fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700


def test_a_pass_and_a_cabinet_key_work_at_their_own_cabinet_only():
    """What a stolen XA-0001 holds (its locker key) mints passes for XA-0001 alone."""
    key_1 = derive_locker_key(MASTER, "XA-0001")
    key_2 = derive_locker_key(MASTER, "XA-0002")
    now = time.time()
    window = staff_pass.window_of(now)
    pass_1 = staff_pass.pass_for(staff_pass.derive_pass_key(key_1), "XA-0001", "li", window, 0)
    assert staff_pass.match_pass(
        staff_pass.derive_pass_key(key_1), "XA-0001", "li", pass_1, now, range(16)
    )
    # At XA-0002 under its own id, or even if typed where XA-0001's id is assumed.
    for locker_id in ("XA-0002", "XA-0001"):
        assert not staff_pass.match_pass(
            staff_pass.derive_pass_key(key_2), locker_id, "li", pass_1, now, range(16)
        )
    # Another member's number, a later shift, a voided counter: refused too.
    pass_key_1 = staff_pass.derive_pass_key(key_1)
    assert not staff_pass.match_pass(pass_key_1, "XA-0001", "wang", pass_1, now, range(16))
    later = now + 2 * staff_pass.WINDOW_SECONDS
    assert not staff_pass.match_pass(pass_key_1, "XA-0001", "li", pass_1, later, range(16))
    assert not staff_pass.match_pass(pass_key_1, "XA-0001", "li", pass_1, now, range(1, 17))
    for bad in ("", "123", "12345678901", "abcdefghij", "１２３４５６７８９０"):
        assert not staff_pass.match_pass(pass_key_1, "XA-0001", "li", bad, now, range(16))
