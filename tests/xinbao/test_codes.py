"""The shared code scheme: cloud and locker must compute identical codes from a counter."""

import hashlib
import hmac
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xinbao.codes import (
    code_digest,
    code_for,
    derive_locker_key,
    is_well_formed,
    match_counter,
)


def rfc4226_sha256(key: bytes, counter: int, digits: int) -> str:
    """HOTP written out from RFC 4226 section 5.3 (with SHA-256), independent of pyotp."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha256).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def test_locker_keys_differ_per_locker_and_master():
    a = derive_locker_key(b"master-1", "XA-0001")
    assert len(a) == 32
    assert a != derive_locker_key(b"master-1", "XA-0002")
    assert a != derive_locker_key(b"master-2", "XA-0001")
    assert a == derive_locker_key(b"master-1", "XA-0001")


def test_empty_master_secret_is_refused():
    with pytest.raises(ValueError, match="master secret"):
        derive_locker_key(b"", "XA-0001")


@given(counter=st.integers(min_value=0, max_value=2**40), digits=st.integers(6, 10))
def test_code_is_rfc4226_hotp_with_sha256(counter, digits):
    key = derive_locker_key(b"master", "XA-0001")
    code = code_for(key, counter, digits)
    assert code == rfc4226_sha256(key, counter, digits)
    assert is_well_formed(code, digits)


@pytest.mark.parametrize("digits", [5, 11, 0])
def test_code_length_outside_6_to_10_is_refused(digits):
    with pytest.raises(ValueError, match="6-10"):
        code_for(b"k" * 32, 1, digits)


def test_negative_counter_is_refused():
    with pytest.raises(ValueError):
        code_for(b"k" * 32, -1)


def test_match_counter_finds_the_right_handover_only():
    key = derive_locker_key(b"master", "XA-0001")
    live = [3, 17, 42]
    assert match_counter(key, code_for(key, 17), live) == 17
    assert match_counter(key, code_for(key, 18), live) is None
    other = derive_locker_key(b"master", "XA-0002")
    assert match_counter(key, code_for(other, 17), live) is None


def test_digest_is_keyed_and_does_not_contain_the_code():
    key = derive_locker_key(b"master", "XA-0001")
    code = code_for(key, 5)
    digest = code_digest(key, code)
    assert code not in digest
    assert digest == code_digest(key, code)
    assert digest != code_digest(derive_locker_key(b"master", "XA-0002"), code)


@pytest.mark.parametrize("typed", ["1234567", "123456789", "1234567a", "１２３４５６７８", ""])
def test_malformed_codes_are_not_well_formed(typed):
    assert not is_well_formed(typed, 8)
