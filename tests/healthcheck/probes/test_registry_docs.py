"""The README's kinds, keys, placeholders and error classes, against what the core and each
registered kind declare, and regions.yaml showing one of each kind: so the documentation cannot
drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from healthcheck.config import load_config
from healthcheck.probes.base import Probe
from healthcheck.probes.registry import KINDS, probe_kind
from healthcheck.result import declared_errors

REPO = Path(__file__).resolve().parents[3]
README = (REPO / "README.md").read_text(encoding="utf-8")


def declared(kind: str) -> type[Probe]:
    found = probe_kind(kind)
    return found if isinstance(found, type) else type(found)


def top_level_items(cell: str) -> list[str]:
    """`a`, `b: {x, y}` (`c`, d) → ["`a`", "`b: {x, y}` (`c`, d)"]: commas outside `…`, (), {}."""
    items, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(cell):
        if char == "`":
            quoted = not quoted
        elif not quoted and char in "({":
            depth += 1
        elif not quoted and char in ")}":
            depth -= 1
        elif char == "," and not quoted and depth == 0:
            items.append(cell[start:i].strip())
            start = i + 1
    items.append(cell[start:].strip())
    return [item for item in items if item]


def table(header: str) -> list[list[str]]:
    """The rows (cells) of the README table whose header line starts with `header`."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def kinds_table() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for kind_cell, keys_cell in table("| kind | keys"):
        kind = kind_cell.strip("`")
        keys[kind] = {
            re.match(r"`([a-z_]+)", item).group(1)
            for item in top_level_items(keys_cell)
            if item.startswith("`")
        }
    return keys


def test_the_kinds_table_lists_every_kind_and_its_keys() -> None:
    documented = kinds_table()
    rdap_line = re.search(r"^(.*) also take `rdap` for `\[DOMAIN_EXPIRATION\]`", README, re.M)
    assert rdap_line, "README no longer says which kinds take `rdap`"
    with_rdap = set(re.findall(r"`([a-z]+)`", rdap_line.group(1)))

    assert set(documented) == set(KINDS)
    for kind in KINDS:
        options = set(declared(kind).options)
        assert documented[kind] == options - {"rdap"}, kind
        assert (kind in with_rdap) == ("rdap" in options), kind


def test_the_placeholders_table_names_the_kinds_that_fill_each() -> None:
    filled: dict[str, set[str]] = {}
    for kind in KINDS:
        for name in declared(kind).placeholders:
            filled.setdefault(name, set()).add(kind)
    rows = table("| placeholder | value | kinds")

    documented: dict[str, set[str]] = {}
    for placeholder_cell, _value, kinds_cell in rows:
        name = re.match(r"`\[([A-Z_]+)\]", placeholder_cell).group(1)
        if kinds_cell == "all":
            documented[name] = set(KINDS)
        else:
            documented[name] = {item.split()[0] for item in top_level_items(kinds_cell)}

    assert documented == filled


def kinds_cell(cell: str) -> set[str]:
    """`all`, `all but `a`, `b``, `none`, or `a`, `b` → the kinds named."""
    named = set(re.findall(r"`([a-z_]+)`", cell))
    if cell == "all":
        return set(KINDS)
    if cell.startswith("all but "):
        return set(KINDS) - named
    return set() if cell == "none" else named


def test_the_error_class_table_is_what_the_core_and_every_kind_declare() -> None:
    """Every class the core declares or a registered kind (the canaries too) can end with, who
    declared it, which kinds end with it and its meaning, word for word."""
    kinds = {kind: declared(kind) for kind in KINDS}  # imported: their classes declared
    documented = {}
    for class_cell, owner_cell, kinds_text, meaning in table("| error class | declared by"):
        owner = "core" if owner_cell == "core" else set(re.findall(r"`([a-z_]+)`", owner_cell))
        documented[class_cell.strip("`")] = (owner, kinds_cell(kinds_text), meaning)

    expected = {}
    for error, declaration in declared_errors().items():
        ending = {kind for kind, probe in kinds.items() if error in probe.errors}
        if error.core or ending:
            owner = "core" if error.core else set(declaration.owner.split(", "))
            expected[error.value] = (owner, ending, declaration.meaning)
    assert documented == expected
    # every class a kind lists is declared, by the core or by some kind's module
    assert all(error.declared for probe in kinds.values() for error in probe.errors)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_regions_yaml_shows_each_kind(kind: str) -> None:
    """Checked where the example can run one (loaded), else at least as a commented example."""
    path = REPO / "regions.yaml"
    loaded = {endpoint.kind for endpoint in load_config(path, environ={}).endpoints()}
    shown = set(re.findall(r"\bkind:\s*([a-z_]+)", path.read_text(encoding="utf-8")))

    assert kind in loaded | shown
