"""Load a topology file: YAML with line marks -> schema -> cross-references.

The loader collects every problem it can find before it gives up, and names the
file, line and column of each (`topo.yaml:42:7: pools.web.backends[2].weight: must be
≥ 0`), the way `haproxy -c` or `keepalived -t` does:

1. YAML: a syntax error stops here (one problem); duplicate keys, which a YAML
   library would otherwise settle silently, are reported with both lines.
2. Schema (`topology.schema`): every pydantic error, mapped back to the line of the
   offending key or value and rewritten to read as a sentence.
3. Cross-references (`topology.validate`): run even when step 2 failed, on the
   entries that passed it, so one run shows both kinds of mistakes.

ruamel.yaml's round-trip loader keeps the line of every key, value and list item;
the tree is then converted into plain dicts and lists for pydantic.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from zonegate.errors import ConfigErrors, ConfigProblem
from zonegate.topology.schema import Listener, Name, Pool, SplitMap, Topology, Zone
from zonegate.topology.validate import Path, validate

MAX_VALUES = 200_000
"""Values a document may expand to; bounds alias bombs ('billion laughs')."""

_STANDARD_TAGS = "tag:yaml.org,2002:"
_MERGE_TAG = _STANDARD_TAGS + "merge"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_NAME = TypeAdapter(Name)
_SECTIONS: dict[str, type[BaseModel]] = {
    "zones": Zone,
    "pools": Pool,
    "listeners": Listener,
    "split": SplitMap,
}
_NAMED_SECTIONS = ("zones", "pools", "listeners")  # keys are Names; split keys are domains

Where = Literal["key", "value", "auto"]


def render_path(path: Sequence[str | int]) -> str:
    """Render a key path the way problems print it: `pools.web-cp.backends[2].weight`.

    List indexes print as `[2]`; keys that are not plain words (a dot, a space) print
    quoted, `split["api.example.test"].sharding`, so the path stays unambiguous.
    """
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        part = part if isinstance(part, str) else _describe(part)  # a YAML key like `1.5:`
        if _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read, parse and validate a topology file.

    Args:
        path: The YAML file; problems name it as given.

    Returns:
        The validated topology.

    Raises:
        ConfigErrors: The file cannot be read, is not UTF-8 YAML, or has schema or
            cross-reference problems; `problems` lists every one found, in file order.
    """
    filename = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigErrors([_problem(filename, f"cannot read topology file: {reason}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        msg = f"not UTF-8 text (invalid byte at offset {e.start})"
        raise ConfigErrors([_problem(filename, msg)]) from None
    return load_topology_text(text, filename=filename)


def load_topology_text(text: str, filename: str = "<string>") -> Topology:
    """Parse and validate a topology given as YAML text.

    Args:
        text: The YAML document.
        filename: The name problems carry (a path, or "<api>" for the control plane).

    Returns:
        The validated topology.

    Raises:
        ConfigErrors: Every YAML, schema and cross-reference problem found.
    """
    return _Loader(text, filename).load()


def _problem(filename: str, msg: str) -> ConfigProblem:
    return ConfigProblem(filename, None, None, "", msg)


class _TooBig(Exception):
    pass


class _Loader:
    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.problems: list[ConfigProblem] = []
        self.tree: Any = None
        self.values = 0

    def fail(self) -> ConfigErrors:
        return ConfigErrors(self.problems)

    def add(
        self, path: Path, msg: str, where: Where = "auto", *, shown: Path | None = None
    ) -> None:
        """Record a problem at `path`'s position; `shown` is the path printed, if other."""
        line, col = self.position(path, where)
        text = render_path(path if shown is None else shown)
        self.problems.append(ConfigProblem(self.filename, line, col, text, msg))

    def add_at(self, path: Path, mark: Any, msg: str) -> None:
        line, col = mark.line + 1, mark.column + 1
        self.problems.append(ConfigProblem(self.filename, line, col, render_path(path), msg))

    # --- step 1: YAML ------------------------------------------------------------

    def load(self) -> Topology:
        # A YAML object is not thread-safe; one per load keeps this function reentrant.
        yaml = YAML(typ="rt")
        # Duplicate keys are found on the composed nodes below, with both lines; the
        # loader itself keeps the first value and goes on to find the other problems.
        yaml.allow_duplicate_keys = True
        try:
            with warnings.catch_warnings():
                # YAML 1.2 allows re-using an anchor name; the later one wins.
                warnings.simplefilter("ignore", ReusedAnchorWarning)
                node = yaml.compose(self.text)
                # A mapping or list as a key cannot even be loaded (unhashable):
                # report it at its line and stop there.
                if node is not None:
                    if self.duplicate_keys(node):
                        raise self.fail()
                    self.tree = yaml.load(self.text)
        except MarkedYAMLError as e:
            self.problems.append(self.yaml_problem(e))
            raise self.fail() from None
        except YAMLError as e:
            self.problems.append(_problem(self.filename, f"invalid YAML: {e}"))
            raise self.fail() from None
        except RecursionError:
            self.problems.append(_problem(self.filename, "invalid YAML: nesting too deep"))
            raise self.fail() from None
        if node is None:
            self.add((), "empty topology: expected a mapping with 'zones'")
            raise self.fail()
        if not isinstance(self.tree, CommentedMap):
            got = _describe(self.tree)
            self.add((), f"expected a mapping with 'zones' at the top level, got {got}")
            raise self.fail()
        try:
            data = self.plain(self.tree, (), ())
        except _TooBig:
            self.add((), f"document too large: more than {MAX_VALUES} values (aliases?)")
            raise self.fail() from None
        topo = self.check(data)
        if self.problems or topo is None:
            raise self.fail()
        return topo

    def yaml_problem(self, e: MarkedYAMLError) -> ConfigProblem:
        mark = e.problem_mark or e.context_mark
        msg = str(e.problem or e.context or "invalid YAML")
        if e.context and e.problem and e.context_mark is not None:
            where = f"line {e.context_mark.line + 1}, column {e.context_mark.column + 1}"
            msg += f" ({e.context} at {where})"
        if mark is None:
            return _problem(self.filename, f"invalid YAML: {msg}")
        return ConfigProblem(
            self.filename, mark.line + 1, mark.column + 1, "", f"invalid YAML: {msg}"
        )

    def duplicate_keys(self, root: Node) -> bool:
        """Report duplicate keys (both lines) and keys that are mappings or lists;
        True when there is such a complex key."""
        complex_key = False
        seen_nodes: set[int] = set()
        stack: list[tuple[Node, Path]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if id(node) in seen_nodes:
                continue  # an alias: the anchored node is checked where it is defined
            seen_nodes.add(id(node))
            if isinstance(node, MappingNode):
                first: dict[tuple[str | None, Any], ScalarNode] = {}
                for key, value in node.value:
                    if not isinstance(key, ScalarNode):
                        kind = "mapping" if isinstance(key, MappingNode) else "list"
                        self.add_at(path, key.start_mark, f"unsupported mapping key (a {kind})")
                        complex_key = True
                        continue
                    if key.tag != _MERGE_TAG:
                        prev = first.setdefault((key.tag, key.value), key)
                        if prev is not key:
                            msg = (
                                f"duplicate key '{key.value}' "
                                f"(first at line {prev.start_mark.line + 1})"
                            )
                            self.add_at(path, key.start_mark, msg)
                    stack.append((value, (*path, key.value)))
            elif isinstance(node, SequenceNode):
                stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
        return complex_key

    def plain(self, value: Any, path: Path, stack: tuple[int, ...]) -> Any:
        """Convert the round-trip tree into plain Python values, reporting what YAML
        allows but a topology does not (tags, complex keys, recursive aliases)."""
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooBig
        if isinstance(value, CommentedMap | CommentedSeq):
            if id(value) in stack:
                self.add(path, "recursive alias: a value contains itself")
                return None
            self.check_tag(value, path)
            inner = (*stack, id(value))
            if isinstance(value, CommentedSeq):
                return [self.plain(v, (*path, i), inner) for i, v in enumerate(value)]
            out: dict[Any, Any] = {}
            for k, v in value.items():
                key = _scalar(k)
                if not _is_plain_scalar(key):
                    self.add(path, f"unsupported mapping key {_describe(key)}", "key")
                    continue
                out[key] = self.plain(v, (*path, key), inner)
            return out
        if isinstance(value, TaggedScalar):
            self.check_tag(value, path)
            return value.value
        return _scalar(value)

    def check_tag(self, value: Any, path: Path) -> None:
        tag = getattr(value, "tag", None)
        name = getattr(tag, "value", None)
        # Standard tags (`!!str 5`) only say what the value already is; others are
        # application tags nothing here would interpret.
        if name is not None and not name.startswith(_STANDARD_TAGS):
            self.add(path, f"unsupported YAML tag '{name}'", "value")

    # --- positions ---------------------------------------------------------------

    def position(self, path: Path, where: Where) -> tuple[int, int]:
        """1-based line and column of `path` in the file.

        `where` picks the key ("pools.web-cp" points at `web-cp:`), the value, or
        "auto": the value of a scalar, the key of a mapping or list. A path that
        leaves the file (a default, a merged key) falls back to its deepest ancestor.
        """
        node: Any = self.tree
        best = (0, 0)
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, CommentedMap) and _has_key(node, part):
                child = node[part]
                key_pos = _lc(node.lc.key, part)
                if last:
                    # An empty value (`zones:`) has no mark of its own worth showing.
                    scalar = not isinstance(child, CommentedMap | CommentedSeq)
                    use_value = child is not None and (
                        where == "value" or (where == "auto" and scalar)
                    )
                    best = (_lc(node.lc.value, part) if use_value else None) or key_pos or best
                else:
                    best = key_pos or best
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                child = node[part]
                best = _lc(node.lc.item, part) or best
            else:
                break
            node = child
        return best[0] + 1, best[1] + 1

    # --- steps 2 and 3: schema and cross-references ------------------------------

    def check(self, data: dict[Any, Any]) -> Topology | None:
        try:
            topo = Topology.model_validate(data)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                self.schema_problem(err)
            partial, broken = _valid_part(data)
            if partial is not None:
                for path, msg in validate(partial, also_defined=broken):
                    self.add(path, msg)
            return None
        for path, msg in validate(topo):
            self.add(path, msg)
        return topo

    def schema_problem(self, err: ErrorDetails) -> None:
        loc: Path = tuple(err["loc"])
        kind = err["type"]
        # Problems with a key (a bad name, an unknown or missing key) are shown on the
        # mapping that holds it, at the key's line (for a missing key: the mapping's).
        if loc and loc[-1] == "[key]":
            self.add(loc[:-1], _message(err, subject="name"), "key", shown=loc[:-2])
        elif kind == "missing":
            self.add(loc[:-1], f"missing required key '{loc[-1]}'", "key")
        elif kind == "extra_forbidden":
            self.add(loc, _unknown_key(loc), "key", shown=loc[:-1])
        else:
            self.add(loc, _message(err), "value")


def _has_key(node: CommentedMap, key: Any) -> bool:
    try:
        return key in node
    except TypeError:  # an unhashable path part
        return False


def _lc(getter: Any, key: Any) -> tuple[int, int] | None:
    try:
        line, col = getter(key)
    except (KeyError, IndexError, TypeError):
        return None  # a merged key, or one ruamel kept no mark for
    return int(line), int(col)


def _is_plain_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _scalar(value: Any) -> Any:
    # ruamel's round-trip scalars subclass int/float/str; pydantic must see the base
    # types (ScalarBoolean, for an anchored boolean, is even an int subclass).
    if isinstance(value, ScalarBoolean):
        return bool(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()  # YAML 1.1 timestamps: give pydantic the text back
    return value


def _valid_part(data: Mapping[Any, Any]) -> tuple[Topology | None, dict[str, set[str]]]:
    """The entries of a schema-invalid file that pass the schema on their own, plus
    the names of those that do not (so references to them are not reported)."""
    broken: dict[str, set[str]] = {section: set() for section in _SECTIONS}
    good: dict[str, dict[Any, Any]] = {}
    for section, model in _SECTIONS.items():
        raw = data.get(section)
        if not isinstance(raw, dict):
            continue
        good[section] = {}
        for name, entry in raw.items():
            try:
                if section in _NAMED_SECTIONS:
                    _NAME.validate_python(name)
                model.model_validate(entry)
            except ValidationError:
                if isinstance(name, str):
                    broken[section].add(name)
                continue
            good[section][name] = entry
    try:
        return Topology.model_validate(good), broken
    except ValidationError:
        return None, broken  # e.g. no valid zone: cross-references would be all noise


# --- messages -----------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, AbstractSet):
        return "a set"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "≥"),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "≤"),
    "less_than": ("lt", "<"),
}

_PATTERNS = {
    _NAME_PATTERN: "use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "^/": "must start with '/'",
    r"^/[^\s]*$": "must start with '/' and contain no spaces",
    r"^[A-Za-z0-9.:\[\]_-]{1,255}$": "must be a host name or an address, with no spaces",
}


def _message(err: ErrorDetails, subject: str | None = None) -> str:
    """A pydantic error as a sentence: "expected an integer, got 'x'"."""
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    got = _describe(value)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {got}"
    if kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        return f"must be {sign} {ctx.get(name)}, got {got}"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"needs at least {ctx.get('min_length')} entries, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} entries, got {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":
        rule = _PATTERNS.get(str(ctx.get("pattern")), f"must match {ctx.get('pattern')}")
        return f"invalid {subject} {got}: {rule}" if subject else f"{rule}, got {got}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(err["msg"])


def _unknown_key(loc: Path) -> str:
    key = str(loc[-1])
    allowed = _fields_at(loc[:-1])
    if not allowed:
        return f"unknown key '{key}'"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    return f"unknown key '{key}' (allowed: {', '.join(allowed)})"


def _fields_at(path: Path) -> list[str]:
    """The keys the model at `path` accepts, found by walking Topology's annotations."""
    tp: Any = Topology
    for part in path:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        else:
            args = typing.get_args(tp)
            origin = typing.get_origin(tp)
            if origin is list and args:
                tp = args[0]
            elif origin is dict and len(args) == 2:
                tp = args[1]
            else:
                return []
        tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and `| None` down to the type that holds the keys."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


__all__ = ["MAX_VALUES", "load_topology", "load_topology_text", "render_path"]
