"""Control models: JSON round trips, the change union, errors, and module purity."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.control.topo import API, first, initial, split, step
from tests.test_architecture import FORBIDDEN, SRC, imported_roots
from zonegate.control.model import (
    CHANGE,
    AuditEntry,
    ChangeRejected,
    Cutover,
    DesiredState,
    Rollback,
    SetBackendAdmin,
    SetSplit,
)
from zonegate.errors import ProtocolError, RemoteProtocolError


def test_state_and_audit_round_trip_through_json() -> None:
    state, audit = step(first()[0])
    assert DesiredState.model_validate_json(state.model_dump_json()) == state
    assert AuditEntry.model_validate_json(audit.model_dump_json()) == audit
    _, audit1 = first()
    assert AuditEntry.model_validate_json(audit1.model_dump_json()) == audit1


def test_change_is_told_apart_by_kind() -> None:
    assert CHANGE.validate_json('{"kind": "cutover", "domain": "a.test", "to": "yanqing"}') == (
        Cutover(domain="a.test", to="yanqing")
    )
    assert CHANGE.validate_python({"kind": "rollback", "to_version": 3}) == Rollback(to_version=3)
    body = SetSplit(domain=API, split=split(changping=(0, 100))).model_dump_json()
    assert CHANGE.validate_json(body) == SetSplit(domain=API, split=split(changping=(0, 100)))


@pytest.mark.parametrize(
    "body",
    [
        '{"kind": "explode"}',
        '{"domain": "a.test", "to": "yanqing"}',
        '{"kind": "cutover", "domain": "a.test", "to": "yanqing", "extra": 1}',
        '{"kind": "rollback", "to_version": 0}',
        '{"kind": "rollback", "to_version": "3"}',
        '{"kind": "backend_admin", "pool": "p", "backend": "b", "state": "off"}',
    ],
)
def test_bad_change_bodies_are_refused(body: str) -> None:
    with pytest.raises(ValidationError):
        CHANGE.validate_json(body)


def test_models_are_frozen() -> None:
    state = initial()
    with pytest.raises(ValidationError):
        state.version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SetBackendAdmin(pool="p", backend="b", state="enabled").state = "drain"  # type: ignore[misc]


def test_audit_needs_an_author() -> None:
    with pytest.raises(ValidationError):
        AuditEntry(version=1, at=0.0, who="", why="", change=None, diff=[], previous_version=0)


def test_change_rejected_is_a_protocol_error_with_its_status_as_hint() -> None:
    err = ChangeRejected("no", 409)
    assert isinstance(err, RemoteProtocolError)
    assert isinstance(err, ProtocolError)
    assert (err.status, err.hint, str(err)) == (409, 409, "no")
    assert ChangeRejected("bad").status == 422


@pytest.mark.parametrize("module", ["control/model.py", "control/service.py"])
def test_pure_control_modules_import_no_io(module: str) -> None:
    bad = imported_roots(SRC / module) & FORBIDDEN
    assert not bad, f"{module} is pure code but imports {sorted(bad)}"
