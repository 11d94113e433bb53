"""The shared code scheme: cloud and locker must compute identical codes from a counter."""

import base64
import hashlib
import hmac
import struct

import pyotp
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


def wide_hotp_sha256(key: bytes, counter: int, digits: int) -> str:
    """RFC 4226's truncation widened to 63 bits, for 9 and 10 digits (docs/codes.md)."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha256).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">Q", mac[offset : offset + 8])[0] & 0x7FFF_FFFF_FFFF_FFFF
    return str(value % 10**digits).zfill(digits)


@given(counter=st.integers(min_value=0, max_value=2**40), digits=st.integers(6, 8))
def test_codes_up_to_8_digits_are_rfc4226_hotp_with_sha256(counter, digits):
    key = derive_locker_key(b"master", "XA-0001")
    code = code_for(key, counter, digits)
    assert code == rfc4226_sha256(key, counter, digits)
    # ... and equal to a standard HOTP implementation's, so the scheme is what it says.
    secret = base64.b32encode(key).decode()
    assert code == pyotp.HOTP(secret, digits=digits, digest=hashlib.sha256).at(counter)
    assert is_well_formed(code, digits)


@given(counter=st.integers(min_value=0, max_value=2**40), digits=st.integers(9, 10))
def test_9_and_10_digit_codes_take_63_bits(counter, digits):
    key = derive_locker_key(b"master", "XA-0001")
    code = code_for(key, counter, digits)
    assert code == wide_hotp_sha256(key, counter, digits)
    assert is_well_formed(code, digits)


@pytest.mark.parametrize("digits", [9, 10])
def test_long_codes_cover_the_whole_code_space_evenly(digits):
    """31-bit truncation (RFC 4226) stops at 2147483647: 10-digit codes never began with 3-9
    and 9-digit codes below 147483647 came half again as often as the rest. Every leading
    digit must now be about equally likely (chi-square, 9 degrees of freedom: 27.9 is the
    p = 0.001 bound), and the top of the range must be reached."""
    key = derive_locker_key(b"master", "XA-0001")
    n = 20_000
    codes = [code_for(key, counter, digits) for counter in range(n)]
    leading = [0] * 10
    for code in codes:
        leading[int(code[0])] += 1
    expected = n / 10
    chi2 = sum((count - expected) ** 2 / expected for count in leading)
    assert chi2 < 27.9, leading
    assert max(int(code) for code in codes) > 0.999 * 10**digits
    assert len(set(codes)) > n - 5  # no narrowing to a small subset either


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
