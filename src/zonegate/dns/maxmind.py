"""Country of an address from a MaxMind database, for the GSLB topology method (shell).

The pure policy (`dns.policy.RegionMap`) takes a `country_of(address) -> code | None`
hook; this module builds one from a GeoLite2/GeoIP2 Country (or City) database with
the `maxminddb` reader, which memory-maps the file and answers in about a
microsecond. The hook reads `country.iso_code`, else `registered_country.iso_code`
(anonymous proxies and satellite providers have only the latter).

    lookup = open_country_lookup(topo.dns.geoip_db)
    table = compile_gslb(topo, country_of=lookup)
"""

from __future__ import annotations

import os
from typing import Any

import maxminddb

from zonegate.errors import ConfigError, ConfigProblem


class CountryLookup:
    """An open MaxMind database as a `country_of` hook; `close()` releases the file."""

    __slots__ = ("_reader", "path")

    def __init__(self, reader: maxminddb.Reader, path: str) -> None:
        self._reader = reader
        self.path = path

    def __call__(self, address: str) -> str | None:
        """The ISO country code of an address ('CN'), or None when the database has
        no country for it or `address` is not an IP address."""
        try:
            record: Any = self._reader.get(address)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            entry = record.get(key)
            if isinstance(entry, dict):
                code = entry.get("iso_code")
                if isinstance(code, str) and code:
                    return code.upper()
        return None

    def close(self) -> None:
        self._reader.close()


def open_country_lookup(path: str | os.PathLike[str]) -> CountryLookup:
    """Open a MaxMind database (`dns.geoip_db`) as an address -> country hook.

    Args:
        path: The .mmdb file.

    Returns:
        A callable `address -> ISO country code | None`, to pass as `country_of` to
        `dns.policy.compile_gslb`.

    Raises:
        ConfigError: The file is missing, unreadable or not a MaxMind database; the
            problem names the file and `dns.geoip_db`.
    """
    filename = os.fspath(path)
    try:
        reader = maxminddb.open_database(filename)
    except FileNotFoundError:
        raise _error(filename, "MaxMind database not found") from None
    except OSError as e:
        raise _error(filename, f"cannot read MaxMind database: {e.strerror or e}") from None
    except (maxminddb.InvalidDatabaseError, ValueError) as e:
        raise _error(filename, f"not a MaxMind database: {e}") from None
    return CountryLookup(reader, filename)


def _error(filename: str, msg: str) -> ConfigError:
    return ConfigError(ConfigProblem(filename, None, None, "dns.geoip_db", msg))


__all__ = ["CountryLookup", "open_country_lookup"]
