"""HTTPDNS request signing: the documented canonical string, reasons, edge cases."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.httpdns.sign import (
    BAD_SIGNATURE,
    EXPIRED,
    TOO_FAR,
    UNKNOWN_ACCOUNT,
    canonical,
    sign,
    verify,
)

SECRET = "0123456789abcdef"
ACCOUNTS = {"app1": SECRET.encode(), "app2": b"another-secret-of-16+"}
HOST = "api.example.test"
NOW = 1_700_000_000.0


def test_docstring_example():
    assert canonical(HOST, 1700000000, "app1") == b"api.example.test\n1700000000\napp1"
    assert (
        sign(SECRET, HOST, 1700000000, "app1")
        == "f37ab6f8eb6669e33f43a632d08a47ddd921907d04a6aec3cd0731bc415154ef"
    )


def test_sign_matches_plain_hmac():
    expected = hmac.new(
        SECRET.encode(), b"a.example.test,b.example.test\n42\napp1", hashlib.sha256
    ).hexdigest()
    assert sign(SECRET, "a.example.test,b.example.test", 42, "app1") == expected
    assert sign(SECRET.encode(), "a.example.test,b.example.test", 42, "app1") == expected


def test_valid_signature():
    sig = sign(SECRET, HOST, int(NOW) + 60, "app1")
    assert verify(ACCOUNTS, HOST, int(NOW) + 60, "app1", sig, NOW) is None
    assert verify(ACCOUNTS, HOST, int(NOW) + 60, "app1", sig.upper(), NOW) is None


@pytest.mark.parametrize(
    ("host", "expiry", "account", "sig_for", "now", "reason"),
    [
        # unknown account comes first, even when expired
        (HOST, 1, "nobody", ("app1", HOST, 1), NOW, UNKNOWN_ACCOUNT),
        (HOST, int(NOW) - 1, "app1", ("app1", HOST, int(NOW) - 1), NOW, EXPIRED),
        # the expiry second itself is still valid, the next one is not
        (HOST, int(NOW), "app1", ("app1", HOST, int(NOW)), NOW, None),
        (HOST, int(NOW), "app1", ("app1", HOST, int(NOW)), NOW + 0.5, EXPIRED),
        # signed for another host, expiry or account
        (
            HOST,
            int(NOW) + 9,
            "app1",
            ("app1", "other.example.test", int(NOW) + 9),
            NOW,
            BAD_SIGNATURE,
        ),
        (HOST, int(NOW) + 9, "app1", ("app1", HOST, int(NOW) + 10), NOW, BAD_SIGNATURE),
        (HOST, int(NOW) + 9, "app2", ("app1", HOST, int(NOW) + 9), NOW, BAD_SIGNATURE),
        # case matters in the host: the parameter is signed as sent
        (
            "API.example.test",
            int(NOW) + 9,
            "app1",
            ("app1", HOST, int(NOW) + 9),
            NOW,
            BAD_SIGNATURE,
        ),
    ],
)
def test_reasons(host, expiry, account, sig_for, now, reason):
    signer, signed_host, signed_expiry = sig_for
    secret = ACCOUNTS.get(signer, b"x" * 16)
    sig = sign(secret, signed_host, signed_expiry, signer)
    assert verify(ACCOUNTS, host, expiry, account, sig, now) == reason


@pytest.mark.parametrize("sig", ["", "zz", "é" * 64, "0" * 64, "0" * 63, "0" * 65])
def test_malformed_signatures_are_bad(sig):
    assert verify(ACCOUNTS, HOST, int(NOW) + 60, "app1", sig, NOW) == BAD_SIGNATURE


@pytest.mark.parametrize("expiry", ["1700000000", 1.5, True, None])
def test_expiry_must_be_int(expiry):
    with pytest.raises(ValueError, match="expiry"):
        sign(SECRET, HOST, expiry, "app1")


def test_no_ambiguity_between_fields():
    # Moving a separator between fields changes the signed bytes.
    a = canonical("a.example.test", 1, "b")
    b = canonical("a.example.test\n1", 1, "b")
    assert a != b


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60),
    st.integers(min_value=0, max_value=2**40),
    st.sampled_from(sorted(ACCOUNTS)),
    st.floats(min_value=0, max_value=2**40, allow_nan=False),
)
def test_round_trip(host, expiry, account, now):
    sig = sign(ACCOUNTS[account], host, expiry, account)
    assert len(sig) == 64
    expected = None if expiry >= now else EXPIRED
    assert verify(ACCOUNTS, host, expiry, account, sig, now) == expected
    # one flipped hex digit is always caught
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    if expected is None:
        assert verify(ACCOUNTS, host, expiry, account, flipped, now) == BAD_SIGNATURE


def test_max_validity_bounds_the_expiry():
    hour = 3600.0
    at_limit = int(NOW) + 3600
    sig = sign(SECRET, HOST, at_limit, "app1")
    assert verify(ACCOUNTS, HOST, at_limit, "app1", sig, NOW, hour) is None
    beyond = at_limit + 1
    sig = sign(SECRET, HOST, beyond, "app1")
    assert verify(ACCOUNTS, HOST, beyond, "app1", sig, NOW, hour) == TOO_FAR
    ten_years = int(NOW) + 10 * 365 * 86400
    sig = sign(SECRET, HOST, ten_years, "app1")
    assert verify(ACCOUNTS, HOST, ten_years, "app1", sig, NOW, hour) == TOO_FAR
    assert verify(ACCOUNTS, HOST, ten_years, "app1", sig, NOW) is None  # no bound given
    # the window is checked before the signature: no HMAC for a request refused anyway
    assert verify(ACCOUNTS, HOST, ten_years, "app1", "00", NOW, hour) == TOO_FAR
    # an unknown account still comes first
    assert verify(ACCOUNTS, HOST, ten_years, "nobody", sig, NOW, hour) == UNKNOWN_ACCOUNT
