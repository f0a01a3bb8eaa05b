"""Shared fixtures: real backend processes, and the hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.peers.processes import BackendProc, start_backend, start_backends

settings.register_profile("ci", deadline=None, max_examples=100, derandomize=False)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


class BackendFactory:
    """Starts backend processes for one test; all are killed when the test ends.

    ``backend_factory()`` starts one (``name``, ``zone``, ``port`` optional);
    ``backend_factory.many(n, zone=..., prefix="b")`` starts n in parallel.
    """

    def __init__(self) -> None:
        self.started: list[BackendProc] = []

    def __call__(self, name: str | None = None, zone: str = "z", port: int = 0) -> BackendProc:
        backend = start_backend(name or f"b{len(self.started) + 1}", zone, port)
        self.started.append(backend)
        return backend

    def many(self, n: int, zone: str = "z", prefix: str = "b") -> list[BackendProc]:
        backends = start_backends(n, zone, prefix=prefix)
        self.started.extend(backends)
        return backends

    def cleanup(self) -> None:
        for backend in self.started:
            backend.kill()


@pytest.fixture
def backend_factory() -> Iterator[BackendFactory]:
    """Start real backend processes (see `BackendFactory`); killed after the test."""
    factory = BackendFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
