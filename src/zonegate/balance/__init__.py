"""Balancing algorithms: one module per algorithm, registered by its config name.

Like HAProxy's `lb_*.c`: `PICKERS` maps each `pools.*.balance` value of the
topology to the `Picker` class implementing it, and `make_picker` builds one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from zonegate.balance.base import Candidate, Loads, PickContext, Picker
from zonegate.balance.chash import ConsistentHashPicker
from zonegate.balance.leastconn import LeastConnPicker
from zonegate.balance.p2c import LeastLoadPicker
from zonegate.balance.rand import RandomPicker
from zonegate.balance.rr import RoundRobinPicker
from zonegate.balance.swrr import SmoothWeightedPicker

__all__ = [
    "PICKERS",
    "Candidate",
    "ConsistentHashPicker",
    "LeastConnPicker",
    "LeastLoadPicker",
    "Loads",
    "PickContext",
    "Picker",
    "PickerClass",
    "RandomPicker",
    "RoundRobinPicker",
    "SmoothWeightedPicker",
    "make_picker",
]

PickerClass = type[
    RandomPicker
    | RoundRobinPicker
    | SmoothWeightedPicker
    | ConsistentHashPicker
    | LeastConnPicker
    | LeastLoadPicker
]
"""Any of the picker classes: each satisfies `Picker` and `PickerFactory`."""

PICKERS: dict[str, PickerClass] = {
    cls.name: cls
    for cls in (
        RandomPicker,
        RoundRobinPicker,
        SmoothWeightedPicker,
        ConsistentHashPicker,
        LeastConnPicker,
        LeastLoadPicker,
    )
}
"""Picker class by config name (`pools.*.balance`)."""


def make_picker(
    name: str,
    candidates: Sequence[Candidate],
    loads: Loads,
    rng: random.Random,
    *,
    balance_factor: float = 1.25,
) -> Picker:
    """Build the picker for a pool.

    Args:
        name: the balancing algorithm's config name, a key of `PICKERS`.
        candidates: the eligible backends and their effective weights.
        loads: the pool's live loads (outlives the picker).
        rng: the picker's only source of randomness.
        balance_factor: bounded-load factor of "hash" (>= 1); others ignore it.

    Returns:
        A new picker over `candidates`.

    Raises:
        ValueError: `name` is not a known algorithm, or the candidates or
            balance_factor are invalid for it.
    """
    try:
        cls = PICKERS[name]
    except KeyError:
        known = ", ".join(sorted(PICKERS))
        raise ValueError(f"unknown balance algorithm {name!r} (known: {known})") from None
    return cls(candidates, loads, rng, balance_factor=balance_factor)
