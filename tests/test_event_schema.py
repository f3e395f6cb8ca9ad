"""The event stream's schema (supervisor/api/event_schema.py) is docs/events.md's table, and it
is what the code makes: every place an event is made (found in the source by its syntax tree)
makes a documented kind with documented fields only, and every documented kind and field is
made somewhere. A real deployment's events are checked against it in test_control_plane."""

from __future__ import annotations

import ast
from pathlib import Path

from supervisor.api.event_schema import COMMON, EVENTS, EVENTS_SCHEMA_VERSION, markdown
from supervisor.api.protocol import event_json
from tests.support.processes import ROOT

# Kinds made from a name at run time, as the code spells them: the f-string's possible values.
DYNAMIC = {"f'{kind}_refused'": ("add_refused", "reduce_refused")}


def _kinds(node: ast.expr) -> tuple[str, ...]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.IfExp):
        return _kinds(node.body) + _kinds(node.orelse)
    return DYNAMIC.get(ast.unparse(node), ())


def _fields(node: ast.expr) -> set[str] | None:
    """The keys of a dict literal (and of the dict literals it unpacks); None: not a literal."""
    if isinstance(node, ast.IfExp):
        body, orelse = _fields(node.body), _fields(node.orelse)
        return None if body is None or orelse is None else body | orelse
    if not isinstance(node, ast.Dict):
        return None
    keys: set[str] = set()
    for key, value in zip(node.keys, node.values, strict=True):
        if key is None:
            inner = _fields(value)
            if inner is None:
                return None
            keys |= inner
        elif isinstance(key, ast.Constant):
            keys.add(key.value)
    return keys


def made_in_code() -> dict[str, list[tuple[str, set[str]]]]:
    """kind -> [(where, its fields)] for every EventRecord(kind, symbol, {...}) and
    self._event(kind, {...}) in the deployment's code."""
    made: dict[str, list[tuple[str, set[str]]]] = {}
    for path in sorted((*ROOT.glob("actors/**/*.py"), *ROOT.glob("supervisor/**/*.py"))):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name == "EventRecord" and len(node.args) == 3:
                kind, data = node.args[0], node.args[2]
            elif (isinstance(f, ast.Attribute) and f.attr == "_event" and isinstance(f.value, ast.Name)
                  and f.value.id == "self" and len(node.args) == 2):
                kind, data = node.args
            else:
                continue
            where = f"{Path(path).relative_to(ROOT)}:{node.lineno}"
            fields = _fields(data)
            if fields is None:                       # the one pass-through (_event's own EventRecord)
                assert ast.unparse(kind) == "kind" and ast.unparse(data) == "dict(data)", where
                continue
            kinds = _kinds(kind)
            assert kinds, f"{where}: an event kind this test cannot read ({ast.unparse(kind)}): add it to DYNAMIC"
            for k in kinds:
                made.setdefault(k, []).append((where, fields))
    return made


def test_the_docs_table_is_the_schema():
    doc = (ROOT / "docs" / "events.md").read_text()
    assert doc.startswith(f"# The event stream (schema version {EVENTS_SCHEMA_VERSION})")
    assert markdown() in doc


def test_every_event_the_code_makes_is_in_the_schema_and_every_documented_one_is_made():
    made = made_in_code()
    assert set(made) == set(EVENTS), (f"made, not documented: {sorted(set(made) - set(EVENTS))};"
                                      f" documented, never made: {sorted(set(EVENTS) - set(made))}")
    for kind, places in made.items():
        documented = set(EVENTS[kind][1])
        for where, fields in places:
            assert fields <= documented, f"{where}: {kind} makes undocumented fields {sorted(fields - documented)}"
            assert not fields & set(COMMON), f"{where}: {kind} would overwrite a common field"
        produced = set().union(*(fields for _, fields in places))
        assert documented <= produced, f"{kind}: documented fields nobody makes: {sorted(documented - produced)}"


def test_a_stream_line_carries_the_schema_version_and_the_common_fields_first():
    from actors.messages import Event

    line = event_json(Event(7, 1.5, "safe_mode", None, {"on": True, "reason": "operator", "seq": 99}))
    assert list(line)[:5] == list(COMMON) and line["schema"] == EVENTS_SCHEMA_VERSION
    assert line["seq"] == 7 and line == {"schema": 1, "seq": 7, "at": 1.5, "kind": "safe_mode", "symbol": None,
                                         "on": True, "reason": "operator"}


def schema_problems(event: dict) -> list[str]:
    """What in one streamed event the schema does not allow (empty: it conforms)."""
    if event.get("schema") != EVENTS_SCHEMA_VERSION:
        return [f"schema {event.get('schema')!r}"]
    if event.get("kind") not in EVENTS:
        return [f"unknown kind {event.get('kind')!r}"]
    allowed = set(COMMON) | set(EVENTS[event["kind"]][1])
    return [f"{event['kind']}: undocumented field {f!r}" for f in event if f not in allowed]
