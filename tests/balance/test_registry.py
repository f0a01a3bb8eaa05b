"""The registry mirrors the config, and the balance package stays pure."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

import zonegate.balance
from zonegate.balance import PICKERS, make_picker
from zonegate.balance.base import Candidate, Loads, PickContext
from zonegate.topology.schema import BALANCE_ALGORITHMS

FORBIDDEN = {"asyncio", "socket", "time", "logging", "threading", "uvloop", "prometheus_client"}


def test_every_config_name_has_a_picker() -> None:
    assert set(PICKERS) == set(BALANCE_ALGORITHMS)
    for name, cls in PICKERS.items():
        assert cls.name == name


@pytest.mark.parametrize("name", BALANCE_ALGORITHMS)
def test_make_picker_builds_a_working_picker(name: str) -> None:
    candidates = [Candidate(0, 1.0), Candidate(1, 2.0)]
    picker = make_picker(name, candidates, Loads.for_pool(2), random.Random(0), balance_factor=1.5)
    assert isinstance(picker, PICKERS[name])
    assert picker.pick(PickContext(hash_key=b"k")) in {0, 1}


def test_unknown_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown balance algorithm 'leastconn'"):
        make_picker("leastconn", [], Loads.for_pool(0), random.Random(0))


def test_exports() -> None:
    assert set(zonegate.balance.__all__) >= {"PICKERS", "make_picker"}
    for name in zonegate.balance.__all__:
        assert hasattr(zonegate.balance, name)


@pytest.mark.parametrize(
    "path", sorted(Path(zonegate.balance.__file__).parent.glob("*.py")), ids=lambda p: p.name
)
def test_balance_modules_are_pure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
