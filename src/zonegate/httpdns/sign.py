"""HTTPDNS request signing: HMAC-SHA256 over host, expiry and account.

Theory of operation
-------------------
An HTTPDNS account (`dns.accounts.NAME.secret` in the topology) shares a secret
with its apps. A signed request carries three more query parameters::

    GET /d?host=api.example.test&account=app1&expiry=1767225600&sig=5f0c...

- `account`: the account name.
- `expiry`: the last second (Unix time, integer, UTC) at which the request is valid.
- `sig`: lowercase hex of HMAC-SHA256(key, message) (RFC 2104, FIPS 180-4), where

      key     = UTF-8 bytes of the account's secret
      message = UTF-8 bytes of  host + "\\n" + expiry + "\\n" + account

  `host` is the `host` parameter exactly as sent after percent-decoding (for a batch,
  the whole comma-separated list, "a.example.test,b.example.test", unchanged: no
  case folding or trimming), and `expiry` its decimal text without sign or leading
  zeros. Example: secret "0123456789abcdef", host "api.example.test", expiry
  1700000000, account "app1" sign the 32 bytes
  "api.example.test\\n1700000000\\napp1" and give
  `sig = f37ab6f8eb6669e33f43a632d08a47ddd921907d04a6aec3cd0731bc415154ef`
  (pinned by tests/httpdns/test_sign.py).

Verification (`verify`) checks, in this order, and names the first failure:

1. "unknown account": the account is not configured.
2. "expired": `expiry < now` (the request is valid up to and including second
   `expiry`).
3. "expiry too far in the future": `expiry > now + max_validity` (the server's
   `dns.signature_max_validity`, default one hour). A signed URL is a bearer token:
   anyone who sees it may replay it until it expires, so its lifetime is bounded
   here, whatever the app chose.
4. "bad signature": the signature does not match (compared in constant time with
   `hmac.compare_digest`; a malformed one is just a bad signature).

Only the server's wall clock decides expiry, so the apps need roughly synchronised
clocks; pick expiry a few minutes ahead. The newline separator cannot appear in a
valid host, expiry or account name, so no two different triples sign the same bytes.

This module is pure: `now` is an input (Unix seconds), no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BAD_SIGNATURE",
    "EXPIRED",
    "TOO_FAR",
    "UNKNOWN_ACCOUNT",
    "canonical",
    "sign",
    "verify",
]

UNKNOWN_ACCOUNT = "unknown account"
EXPIRED = "expired"
TOO_FAR = "expiry too far in the future"
BAD_SIGNATURE = "bad signature"


def canonical(host: str, expiry: int, account: str) -> bytes:
    """The bytes that are signed: `f"{host}\\n{expiry}\\n{account}"` in UTF-8.

    Raises:
        ValueError: `expiry` is not an int (bool is refused too), or a value holds a
            lone surrogate and has no UTF-8 encoding.
    """
    if isinstance(expiry, bool) or not isinstance(expiry, int):
        raise ValueError(f"expiry must be an integer (Unix seconds), got {expiry!r}")
    return f"{host}\n{expiry}\n{account}".encode()


def sign(secret: str | bytes, host: str, expiry: int, account: str) -> str:
    """The signature of a request: lowercase hex HMAC-SHA256 of `canonical(...)`.

    Args:
        secret: the account's secret (a str is encoded as UTF-8).
        host: the `host` parameter exactly as sent.
        expiry: last valid second, Unix time.
        account: the account name.

    Returns:
        64 lowercase hex digits.

    Raises:
        ValueError: as `canonical`.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, canonical(host, expiry, account), hashlib.sha256).hexdigest()


def verify(
    accounts: Mapping[str, bytes],
    host: str,
    expiry: int,
    account: str,
    signature: str,
    now: float,
    max_validity: float | None = None,
) -> str | None:
    """Check a signed request.

    Args:
        accounts: account name -> secret bytes.
        host, expiry, account: as in `sign`.
        signature: the `sig` parameter (hex; upper case is accepted).
        now: the current Unix time in seconds (wall clock).
        max_validity: the farthest `expiry` may lie after `now`, in seconds (None:
            no bound).

    Returns:
        None when the request is valid, else the reason: UNKNOWN_ACCOUNT, EXPIRED,
        TOO_FAR or BAD_SIGNATURE.

    Raises:
        ValueError: `expiry` is not an int.
    """
    secret = accounts.get(account)
    if secret is None:
        return UNKNOWN_ACCOUNT
    if expiry < now:
        return EXPIRED
    if max_validity is not None and expiry > now + max_validity:
        return TOO_FAR
    expected = sign(secret, host, expiry, account)
    try:
        given = signature.lower().encode("ascii")
    except UnicodeEncodeError:
        return BAD_SIGNATURE
    if not hmac.compare_digest(expected.encode("ascii"), given):
        return BAD_SIGNATURE
    return None
