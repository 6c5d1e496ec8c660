"""Safe YAML with bounds: a hostile file gets a clear refusal, never unbounded time or memory.

Values are built straight from the parser's events (no node graph, no recursion), counting as
they go: nesting depth, and size with every alias expanded. A "billion laughs" file (9 levels
of 9 aliases: 387 million values from 1 KB) is refused at its eighth line, in milliseconds,
instead of taking minutes and gigabytes; 5,000 levels of nesting are refused instead of ending
in a RecursionError. Only the standard scalar tags are taken (no `!!python/...`), a key given
twice is refused, merge keys (`<<: *defaults`) work as in PyYAML.

Parsing runs in libyaml when PyYAML has it: on 20,000 endpoints PyYAML's pure-Python scanner
was 85 % of what `check-config` took, and its node graph (a Python object per value, each with
two position marks) most of its memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark, MarkedYAMLError
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser as _CParser  # where yaml.cyaml takes it from, unexported
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None  # type: ignore[assignment, misc]  # mypy types the name by its import

# 100,000 endpoints written out in full are 11 MB and 0.9 million values; the limits leave
# twice that, and keep the worst a file can ask for (about 200,000 endpoints: ~20 s and ~500 MB
# to check) inside the service's MemoryMax=1G. Aliases count as everything they repeat, so a
# region aliased many times cannot multiply the endpoints past the same bound.
MAX_BYTES = 16 * 2**20
MAX_DEPTH = 64  # a real configuration nests about 8 deep
MAX_VALUES = 2_000_000
_REMEMBERED = 10_000  # plain scalars whose type is remembered

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_TEXT = {_MERGE, "tag:yaml.org,2002:value"}
_SCALARS = {
    tag: build
    for tag, build in SafeConstructor.yaml_constructors.items()
    if tag
    in {
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:timestamp",
        _STR,
    }
}


class LimitError(MarkedYAMLError):
    """The document is past one of the bounds; `problem` says which, and where."""


class _Open:
    """A sequence or mapping whose end event has not come yet."""

    __slots__ = ("anchor", "counted", "key", "mark", "merges", "value")

    def __init__(self, value: Any, anchor: str | None, counted: int, mark: Any) -> None:
        self.value = value
        self.anchor = anchor
        self.counted = counted  # values counted before this one began
        self.mark = mark
        self.key: Any = _NO_KEY
        self.merges: list[tuple[Any, Any]] = []


def _at(event: Event) -> Mark | None:
    """Where an event starts, for an error or a node."""
    # types-PyYAML lets errors and nodes take only PyYAML's Mark, not libyaml's of the same shape.
    return event.start_mark  # type: ignore[return-value]


_NO_KEY: Any = object()
_MERGE_KEY: Any = object()


class _Builder:
    def __init__(self) -> None:
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> value, values it stands for
        self.counted = 0
        self.stack: list[_Open] = []
        self.root: Any = None
        self.documents = 0
        self.text: dict[str, bool] = {}  # plain scalar -> whether it is text; keys repeat

    def build(self, parser: Any) -> Any:
        handlers: dict[type[Event], Callable[[Any], None]] = {
            ScalarEvent: self.scalar,
            AliasEvent: self.alias,
            SequenceStartEvent: self.start,
            MappingStartEvent: self.start,
            SequenceEndEvent: self.end,
            MappingEndEvent: self.end,
        }
        get_event, stack, text = parser.get_event, self.stack, self.text
        # Most values are text: quoted, or plain and not like a number, boolean, null or merge
        # key. They take this short way (measured: half the time to load 100,000 endpoints).
        while (event := get_event()) is not None:
            if type(event) is ScalarEvent and event.tag is None and event.anchor is None and stack:
                value = event.value
                if event.implicit[0]:  # plain, so maybe not text
                    is_text = text.get(value)
                    if is_text is None:
                        is_text = self.resolver.resolve(ScalarNode, value, (True, False)) == _STR
                        if len(text) < _REMEMBERED:
                            text[value] = is_text
                    if not is_text:
                        self.scalar(event)
                        continue
                self.counted += 1
                if self.counted > MAX_VALUES:
                    self.count(0, event)
                parent = stack[-1]
                key = parent.key
                if key is _NO_KEY:
                    if type(parent.value) is list:
                        parent.value.append(value)
                    else:
                        self.add(value, event)  # a key: checked for a repeat
                elif key is not _MERGE_KEY:
                    parent.value[key] = value
                    parent.key = _NO_KEY
                else:
                    self.add(value, event)
                continue
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
            elif isinstance(event, DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    raise ConstructorError(
                        None, None, "expected a single document, found another", _at(event)
                    )
            elif not isinstance(event, DocumentEndEvent | StreamStartEvent | StreamEndEvent):
                raise ConstructorError(None, None, f"unexpected {event}", _at(event))
        return self.root

    # -- events --------------------------------------------------------------------------------
    def scalar(self, event: ScalarEvent) -> None:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(ScalarNode, event.value, event.implicit)
        if tag == _STR:
            value: Any = event.value
        elif tag in _PLAIN_TEXT:  # `<<` is a merge key only as a key of a mapping
            in_key = self.stack and isinstance(self.stack[-1].value, dict)
            value = (
                _MERGE_KEY
                if tag == _MERGE and in_key and self.stack[-1].key is _NO_KEY
                else event.value
            )
        else:
            build = _SCALARS.get(tag)
            if build is None:
                raise ConstructorError(
                    None, None, f"the tag {tag!r} is not accepted here", _at(event)
                )
            value = build(self.constructor, ScalarNode(tag, event.value, _at(event)))
        self.count(1, event)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        self.add(value, event)

    def alias(self, event: AliasEvent) -> None:
        assert event.anchor is not None  # the parser gives every alias its anchor
        found = self.anchors.get(event.anchor)
        if found is None:
            if any(item.anchor == event.anchor for item in self.stack):
                raise LimitError(
                    None, None, f"alias *{event.anchor} is inside its own anchor", _at(event)
                )
            raise ConstructorError(
                None, None, f"found undefined alias {event.anchor!r}", _at(event)
            )
        value, size = found
        self.count(size, event)
        self.add(value, event)

    def start(self, event: SequenceStartEvent | MappingStartEvent) -> None:
        mapping = isinstance(event, MappingStartEvent)
        if event.tag not in (None, "!", _MAP if mapping else _SEQ):
            raise ConstructorError(
                None, None, f"the tag {event.tag!r} is not accepted here", _at(event)
            )
        if len(self.stack) >= MAX_DEPTH:
            raise LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels", _at(event))
        self.count(1, event)
        value: Any = {} if mapping else []
        self.stack.append(_Open(value, event.anchor, self.counted - 1, event.start_mark))

    def end(self, event: SequenceEndEvent | MappingEndEvent) -> None:
        done = self.stack.pop()
        value = done.value
        if done.merges:
            merged: dict[Any, Any] = {}
            for merge, mark in reversed(done.merges):
                for item in merge if isinstance(merge, list) else [merge]:
                    if not isinstance(item, dict):
                        raise ConstructorError(
                            None, None, "a merge key (<<) takes mappings, or a list of them", mark
                        )
                for item in reversed(merge) if isinstance(merge, list) else [merge]:
                    merged.update(item)
            merged.update(value)
            value = merged
        if done.anchor is not None:
            self.anchors[done.anchor] = (value, self.counted - done.counted)
        self.add(value, event)

    # -- helpers -------------------------------------------------------------------------------
    def add(self, value: Any, event: Any) -> None:
        if not self.stack:
            self.root = value
            return
        parent = self.stack[-1]
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif parent.key is _NO_KEY:
            try:
                hash(value)
            except TypeError:
                raise ConstructorError(
                    "while reading a mapping",
                    parent.mark,
                    "a key must be a plain value, not a list or mapping",
                    event.start_mark,
                ) from None
            if value is not _MERGE_KEY and value in parent.value:
                raise ConstructorError(
                    "while reading a mapping",
                    parent.mark,
                    f"key {value!r} appears twice",
                    event.start_mark,
                )
            parent.key = value
        else:
            if parent.key is _MERGE_KEY:
                parent.merges.append((value, event.start_mark))
            else:
                parent.value[parent.key] = value
            parent.key = _NO_KEY

    def count(self, values: int, event: Any) -> None:
        self.counted += values
        if self.counted > MAX_VALUES:
            raise LimitError(
                None,
                None,
                f"more than {MAX_VALUES:,} values with aliases expanded "
                "(an alias repeats everything its anchor holds)",
                event.start_mark,
            )


def load(text: str) -> Any:
    """One YAML document as Python values; raise yaml.YAMLError (LimitError past a bound)."""
    parser = _CParser(text) if _CParser is not None else yaml.SafeLoader(text)
    try:
        return _Builder().build(parser)
    finally:
        parser.dispose()
