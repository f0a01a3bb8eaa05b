"""Shared hypothesis strategies and settings for the picker tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from zonegate.balance.base import Candidate, Loads

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Per-test settings on top of the loaded profile (tests/conftest.py sets max_examples)."""

weights = st.one_of(
    st.just(0.0),
    st.integers(min_value=-3, max_value=20).map(float),
    st.floats(min_value=0.01, max_value=50.0, allow_nan=False, allow_infinity=False),
)
"""Weights as slow start and config produce them, including zero and negative."""


@st.composite
def pools(draw: st.DrawFn, max_size: int = 8) -> tuple[list[Candidate], Loads]:
    """A pool: candidates with distinct, maybe sparse indexes, and random loads."""
    size = draw(st.integers(min_value=0, max_value=max_size))
    pool_size = size + draw(st.integers(min_value=0, max_value=3))
    indexes = draw(st.permutations(range(pool_size)))[:size]
    candidates = [Candidate(i, draw(weights)) for i in indexes]
    loads = Loads.for_pool(pool_size)
    loads.inflight[:] = draw(st.lists(st.integers(0, 50), min_size=pool_size, max_size=pool_size))
    loads.latency[:] = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(min_value=1e-4, max_value=2.0)),
            min_size=pool_size,
            max_size=pool_size,
        )
    )
    return candidates, loads


def pickable(candidates: list[Candidate]) -> set[int]:
    """Indexes a picker may ever return."""
    return {c.index for c in candidates if c.weight > 0}
