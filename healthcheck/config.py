"""Load `regions.yaml`: safe YAML, `${ENV}` interpolation, defaults merged down, validated.

Every error names the file, the key path (`regions.us-west.endpoints[2].timeout`) and what is
wrong; nothing starts on a bad configuration.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from healthcheck import safe_yaml, schema
from healthcheck.alert_settings import RuleSettings
from healthcheck.alerting_section import check_windows, overrides, read_alerting, read_overrides
from healthcheck.conditions import (
    PLACEHOLDERS,
    Condition,
    ConditionSyntaxError,
    parse_condition,
)
from healthcheck.errors import ConfigError
from healthcheck.labels import frozen, read_labels
from healthcheck.probes.base import Probe
from healthcheck.probes.registry import KINDS, is_kind, known_kinds, probe_kind
from healthcheck.result import EndpointId
from healthcheck.schema import REQUIRED, FieldError, Option
from healthcheck.secrets import UNSET_PLACEHOLDER, Redactor, Secret, UnsetSecret, UnsetVariable
from healthcheck.sections import SECTIONS
from healthcheck.targets import Config, Endpoint, ExporterSettings, ProbeSettings, Region

DEFAULT_LATENCY = {"warning": 0.1, "critical": 0.5}

COMMON_OPTIONS: dict[str, Option] = {
    "interval": Option(schema.duration_up_to(schema.DAY), 30.0, "how often to check"),
    "timeout": Option(schema.duration_up_to(schema.DAY), 5.0, "limit for one attempt"),
    "retries": Option(schema.integer(0, 10), 1, "extra attempts inside one check"),
    "latency": Option(lambda v: schema.sub_mapping(v, schema.LATENCY_KEYS), DEFAULT_LATENCY),
    "conditions": Option(lambda v: v, ()),  # parsed per endpoint, with the kind's placeholders
    "alerts": Option(read_overrides, {}, "rule settings for this endpoint; enabled: false mutes"),
    "labels": Option(read_labels, {}, "labels for its alerts, routes and (some) metrics"),
    "depends_on": Option(
        lambda v: _dependencies(v), (), "region/endpoint or region names this endpoint needs"
    ),
}
ENDPOINT_KEYS = {"name", "kind", "enabled"}
# merged key by key down the levels
MERGED_MAPPINGS = {"latency", "headers", "tls", "alerts", "labels"}
TOP_LEVEL_KEYS = ("defaults", "regions", "alerting", *SECTIONS)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
# A value this short is too common to scrub from every log line (a port, "true").
_MIN_SECRET_LENGTH = 6


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    allow_unset: bool = False,
) -> Config:
    """Read, interpolate and validate a configuration file. `allow_unset`: for a command that
    never uses a secret's value, a `${VAR}` not set is no error (see `parse_config`)."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = file.read(safe_yaml.MAX_BYTES + 1)  # never more than the limit, whatever it is
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", file=source) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", file=source) from None
    return parse_config(text, source, environ, allow_unset=allow_unset)


def parse_config(
    text: str,
    source: str,
    environ: Mapping[str, str] | None = None,
    *,
    allow_unset: bool = False,
) -> Config:
    """Validate configuration text; `source` names it in error messages. With `allow_unset`,
    a `${VAR}` not set (and no `:-default`) makes an UnsetSecret: its key is validated with a
    placeholder, an error at that key names the variable, the Config lists it in `unset`
    (`require_environment` refuses it) and the value cannot be revealed once loaded."""
    if len(text) > safe_yaml.MAX_BYTES:
        raise ConfigError(
            f"the file is larger than {safe_yaml.MAX_BYTES // 2**20} MiB, the most accepted",
            file=source,
        )
    try:
        data = safe_yaml.load(text)
    except safe_yaml.LimitError as exc:
        raise ConfigError(f"{_where(exc)}refused: {exc.problem}", file=source) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{_where(exc)}invalid YAML: {exc.problem}", file=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=source) from None
    except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
        raise ConfigError(f"invalid YAML: {exc}", file=source) from None
    builder = _Builder(source, os.environ if environ is None else environ, allow_unset)
    # No `$` in the text: nothing to interpolate, and no walk over every value to find that out.
    return builder.build(data, interpolate="$" in text)


def _where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


class _Builder:
    """Walks the parsed YAML once, collecting secrets and raising the first error found."""

    def __init__(self, source: str, environ: Mapping[str, str], allow_unset: bool = False) -> None:
        self.source = source
        self.environ = environ
        self.allow_unset = allow_unset
        self.unset: list[UnsetVariable] = []
        self.unset_values: list[UnsetSecret] = []
        self.base_dir = Path(source).parent
        self.secrets: set[str] = set()
        # The same value is written once in `defaults` and read for every endpoint: at 100,000
        # endpoints re-reading durations and re-parsing conditions was 30 % of check-config.
        self.known: dict[tuple[Any, type, Any], Any] = {}
        self.parsed: dict[tuple[str, tuple[str, ...]], Condition] = {}
        # A value a region's endpoints inherit is one object for all of them: read it once.
        # `inherited` keeps each such object alive, so its id is not reused while cached.
        self.inherited: list[dict[str, Any]] = []
        self.read_once: dict[tuple[Any, int], Any] = {}
        self.kinds: dict[str, dict[str, Option]] = {}
        self.rules = RuleSettings()  # alerting.rules, once read: endpoint overrides go over it
        # Where each endpoint's depends_on was written, to name it in an error.
        self.depends_at: dict[EndpointId, str] = {}

    def error(self, path: str, message: str) -> ConfigError:
        # A value built from a ${VAR} that is not set cannot be checked (nor a key inside it):
        # the variable is what is wrong, as it is when unset variables are refused.
        unset = next((u for u in self.unset if _within(path, u.path)), None)
        if unset is not None:
            path, message = unset.path, f"{unset.describe()}; this key needs its value"
        # A value that came from the environment may be echoed back: never show it.
        return ConfigError(Redactor(self.secrets)(message), file=self.source, path=path or None)

    # -- interpolation -------------------------------------------------------------------------
    def interpolate(self, value: Any, path: str) -> Any:
        """The value with `${VAR}` replaced; containers with nothing to replace are kept as
        they are (no copy per endpoint, and an alias's value stays one object)."""
        if isinstance(value, dict):
            changed = {}
            for key, item in value.items():
                new = self.interpolate(item, _join(path, key)) if _has_text(item) else item
                if new is not item:
                    changed[key] = new
            return {**value, **changed} if changed else value
        if isinstance(value, list):
            items = [
                self.interpolate(item, f"{path}[{i}]") if _has_text(item) else item
                for i, item in enumerate(value)
            ]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        if isinstance(value, str) and "$" in value:
            return self._substitute(value, path)
        return value

    def _substitute(self, value: str, path: str) -> str | Secret:
        from_environment = False
        unset: list[UnsetVariable] = []

        def replace(match: re.Match[str]) -> str:
            nonlocal from_environment
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name is None:
                raise self.error(path, "malformed ${...}: write ${NAME} or ${NAME:-default}")
            if name in self.environ:
                found = self.environ[name]
                from_environment = True
                if len(found) >= _MIN_SECRET_LENGTH:
                    self.secrets.add(found)
                return found
            if default is not None:
                return default
            if self.allow_unset:
                unset.append(UnsetVariable(name, path))
                return UNSET_PLACEHOLDER
            raise self.error(
                path,
                f"environment variable {name} is not set (write ${{{name}:-default}} to allow)",
            )

        result = _INTERPOLATION.sub(replace, value)
        if unset:
            self.unset += unset
            self.unset_values.append(UnsetSecret(result, unset[0]))
            return self.unset_values[-1]
        return Secret(result) if from_environment else result

    # -- whole file ----------------------------------------------------------------------------
    def build(self, data: Any, interpolate: bool = True) -> Config:
        if data is None:
            raise self.error("", "the file is empty; it needs at least a 'regions' mapping")
        if not isinstance(data, dict):
            raise self.error("", f"expected a mapping at the top level, got {_kind_of(data)}")
        if interpolate:
            data = self.interpolate(data, "")
        self.refuse_unknown(data, TOP_LEVEL_KEYS, "")
        scheduler, storage, exporter, sla = (
            self.read(SECTIONS[name].build, data.get(name), name)
            for name in ("scheduler", "storage", "exporter", "sla")
        )
        self.check_exporter(exporter)
        alerting = self.read(read_alerting, data.get("alerting") or {}, "alerting")
        if exporter.public_url is not None:
            alerting = replace(alerting, public_url=exporter.public_url.rstrip("/"))
        self.rules = alerting.rules
        defaults = self.mapping(data.get("defaults", {}), "defaults")
        self.check_defaults(defaults, "defaults")
        regions_raw = data.get("regions")
        if regions_raw is None:
            raise self.error("regions", "missing: list at least one region with its endpoints")
        regions_raw = self.mapping(regions_raw, "regions")
        if not regions_raw:
            raise self.error("regions", "no regions: list at least one region")
        regions = tuple(
            self.region(name, raw, defaults, _join("regions", name))
            for name, raw in regions_raw.items()
        )
        self.check_dependencies(regions, regions_raw)
        for loaded in self.unset_values:  # validated: from now on nothing may use them
            loaded.seal()
        return Config(
            source=self.source,
            regions=regions,
            scheduler=scheduler,
            storage=storage,
            exporter=exporter,
            alerting=alerting,
            sla_target=sla.target,
            secrets=frozenset(self.secrets),
            unset=tuple(self.unset),
        )

    def region(self, name: Any, raw: Any, defaults: dict[str, Any], path: str) -> Region:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise self.error(path, f"region name {name!r} must be letters, digits, '-', '_', '.'")
        raw = self.mapping(raw, path)
        self.refuse_unknown(raw, ("defaults", "endpoints"), path)
        region_defaults = self.mapping(raw.get("defaults", {}), _join(path, "defaults"))
        self.check_defaults(region_defaults, _join(path, "defaults"))
        endpoints_raw = raw.get("endpoints")
        endpoints_path = _join(path, "endpoints")
        if not isinstance(endpoints_raw, list) or not endpoints_raw:
            raise self.error(endpoints_path, "expected a list of at least one endpoint")
        endpoints: list[Endpoint] = []
        seen: dict[str, int] = {}
        inherited = {
            key: _merge_levels([defaults, region_defaults], key)
            for key in {**defaults, **region_defaults}
        }
        self.inherited.append(inherited)
        for index, item in enumerate(endpoints_raw):
            item_path = f"{endpoints_path}[{index}]"
            item = self.mapping(item, item_path)
            endpoint = self.endpoint(name, item, inherited, item_path)
            if endpoint.name in seen:
                raise self.error(
                    _join(item_path, "name"),
                    f"duplicate endpoint name {endpoint.name!r} in region {name!r} "
                    f"(also at {endpoints_path}[{seen[endpoint.name]}])",
                )
            seen[endpoint.name] = index
            if item.get("enabled", True):
                endpoints.append(endpoint)
        return Region(name, tuple(endpoints))

    # -- one endpoint --------------------------------------------------------------------------
    def endpoint(
        self, region: str, raw: dict[str, Any], inherited: dict[str, Any], path: str
    ) -> Endpoint:
        name = raw.get("name")
        if name is None:
            raise self.error(_join(path, "name"), "missing: every endpoint needs a name")
        if isinstance(name, UnsetSecret):  # a name is shown everywhere: never a placeholder
            raise self.error(_join(path, "name"), "needs the value of its variable")
        name = _plain(name)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise self.error(
                _join(path, "name"),
                f"{name!r} is not a valid name: use letters, digits, '-', '_', '.' (max 63)",
            )
        kind_name = _plain(raw.get("kind", "http"))
        if not isinstance(kind_name, str) or not is_kind(kind_name):
            raise self.error(
                _join(path, "kind"),
                f"unknown kind {kind_name!r}; expected one of {', '.join(known_kinds())}",
            )
        try:
            probe = probe_kind(kind_name)
        except LookupError as exc:  # a kind that cannot load: its error classes clash, say
            raise self.error(_join(path, "kind"), str(exc)) from None
        options = self.kinds.get(kind_name) or {**COMMON_OPTIONS, **probe.options}
        self.kinds[kind_name] = options
        for key in raw:
            if key not in options and key not in ENDPOINT_KEYS:
                self.refuse_unknown(raw, (*ENDPOINT_KEYS, *options), path, kind=kind_name)
        if "enabled" in raw:
            self.read(schema.boolean, raw["enabled"], _join(path, "enabled"))

        values: dict[str, Any] = {}
        for key, option in options.items():
            if key in raw:
                merged = raw[key]
                if key in MERGED_MAPPINGS and isinstance(merged, dict):
                    above = inherited.get(key)
                    merged = {**above, **merged} if isinstance(above, dict) else merged
            elif key in inherited:
                merged = inherited[key]
                if key != "conditions" and type(merged) not in _PLAIN:
                    values[key] = self.read_inherited(option.read, merged, path, key)
                    continue
            elif option.default is REQUIRED:
                raise self.error(_join(path, key), f"missing: a {kind_name} endpoint needs '{key}'")
            else:
                values[key] = option.default
                continue
            if key == "conditions":
                values[key] = self.conditions(merged, probe, _join(path, key))
            else:
                values[key] = self.read(option.read, merged, path, key)

        latency = {**DEFAULT_LATENCY, **values["latency"]}
        self.check_latency(latency, _join(path, "latency"))
        if values["timeout"] > values["interval"]:
            raise self.error(
                _join(path, "timeout"),
                f"timeout ({values['timeout']:g}s) is longer than the interval "
                f"({values['interval']:g}s); checks of one endpoint must not overlap",
            )
        if values["alerts"]:
            try:
                check_windows(values["alerts"], self.rules)
            except FieldError as exc:
                raise self.error(_join(path, f"alerts.{exc.key}"), exc.message) from None
        depends_on = values["depends_on"]
        if depends_on:
            # `regions.eu.defaults.depends_on: [eu/db]` is everyone in eu but db itself.
            if "depends_on" not in raw:
                depends_on = tuple(d for d in depends_on if d != f"{region}/{name}")
            self.depends_at[EndpointId(region, name)] = _join(path, "depends_on")
        settings = self.resolve_files(probe.settings(**{k: values[k] for k in probe.options}), path)
        try:
            settings = probe.resolve(settings, self.base_dir)
        except FieldError as exc:
            raise self.error(_sub(path, exc.key), exc.message) from None
        return Endpoint(
            region=region,
            name=name,
            kind=kind_name,
            interval=values["interval"],
            timeout=values["timeout"],
            retries=values["retries"],
            latency_warning=latency["warning"],
            latency_critical=latency["critical"],
            conditions=values["conditions"],
            settings=settings,
            alerts=overrides(values["alerts"]) if values["alerts"] else _NO_OVERRIDES,
            labels=frozen(values["labels"]) if values["labels"] else (),
            depends_on=depends_on,
            cadence=probe.cadence(settings, values["interval"]),
        )

    def conditions(self, raw: Any, probe: type[Probe], path: str) -> tuple[Condition, ...]:
        if not isinstance(raw, list):
            raise self.error(path, f"expected a list of condition strings, got {_kind_of(raw)}")
        parsed = []
        # The common placeholders, then any the kind adds: each is known to the parser
        known = (*PLACEHOLDERS, *sorted(probe.placeholders.difference(PLACEHOLDERS)))
        for index, text in enumerate(raw):
            item_path = f"{path}[{index}]"
            text = _plain(text)
            if not isinstance(text, str):
                raise self.error(item_path, f"expected a condition string, got {_kind_of(text)}")
            try:
                condition = self.parsed.get((text, known)) or parse_condition(text, known)
                self.parsed[text, known] = condition
            except ConditionSyntaxError as exc:
                raise self.error(item_path, f"{exc} in {text!r}") from None
            unavailable = condition.placeholders - probe.placeholders
            if unavailable:
                allowed = ", ".join(f"[{p}]" for p in sorted(probe.placeholders))
                raise self.error(
                    item_path,
                    f"[{sorted(unavailable)[0]}] is not available for {probe.kind} endpoints "
                    f"(they offer {allowed})",
                )
            parsed.append(condition)
        return tuple(parsed)

    # -- checks --------------------------------------------------------------------------------
    def check_dependencies(self, regions: tuple[Region, ...], raw: dict[str, Any]) -> None:
        """Every depends_on names an endpoint or a region of this file, and no chain of them
        comes back to where it started."""
        if not self.depends_at:
            return
        # Endpoints switched off (enabled: false) are known: they just never fire.
        known = {
            f"{name}/{_plain(item.get('name'))}"
            for name, region in raw.items()
            for item in region.get("endpoints", ())
            if isinstance(item, dict)
        }
        edges: dict[str, tuple[str, ...]] = {}
        for region in regions:
            for endpoint in region.endpoints:
                if not endpoint.depends_on:
                    continue
                path = self.depends_at[endpoint.id]
                for index, name in enumerate(endpoint.depends_on):
                    if name not in known and name not in raw:
                        hint = difflib.get_close_matches(name, [*known, *raw], n=1)
                        raise self.error(
                            f"{path}[{index}]",
                            f"{name!r} is neither a region nor a region/endpoint of this file"
                            + (f"; did you mean {hint[0]!r}?" if hint else ""),
                        )
                edges[str(endpoint.id)] = tuple(d for d in endpoint.depends_on if "/" in d)
        done: set[str] = set()
        for start in edges:
            chain = _cycle(start, edges, done)
            if chain:
                where = self.depends_at[EndpointId.parse(chain[0])]
                raise self.error(
                    where,
                    "dependency cycle: " + " -> ".join(chain) + " (each would hold the others' "
                    "alerts, so none would ever page)",
                )

    def check_defaults(self, defaults: dict[str, Any], path: str) -> None:
        """Defaults take any key some kind takes; each value is checked where it is written.
        The kinds' modules are imported only for a key no endpoint of any kind takes: a config
        pays for the kinds it uses (check-config and --once load no numpy for an http fleet)."""
        try:
            if defaults.keys() <= COMMON_OPTIONS.keys():
                allowed = dict(COMMON_OPTIONS)
            else:
                allowed = _default_keys(list(KINDS))
            if not allowed.keys() >= defaults.keys():  # maybe a key an entry point's kind takes
                allowed = _default_keys(known_kinds())
        except LookupError as exc:  # a kind that cannot load: its error classes clash, say
            raise self.error(path, str(exc)) from None
        self.refuse_unknown(defaults, allowed, path)
        for key, value in defaults.items():
            if key == "conditions":
                if not isinstance(value, list):
                    raise self.error(_join(path, key), "expected a list of condition strings")
                continue
            parsed = self.read(allowed[key].read, value, _join(path, key))
            if key == "latency":  # both given here: check now; otherwise once merged
                self.check_latency(parsed, _join(path, key))

    def check_latency(self, latency: dict[str, float | None], path: str) -> None:
        warning, critical = latency.get("warning"), latency.get("critical")
        if warning is not None and critical is not None and warning >= critical:
            raise self.error(
                path,
                f"warning ({warning * 1000:g}ms) must be lower than critical "
                f"({critical * 1000:g}ms)",
            )

    def resolve_files(self, settings: ProbeSettings, path: str) -> ProbeSettings:
        """A CA file must exist; a relative path is taken from the config file's folder."""
        tls = getattr(settings, "tls", None)
        if tls is None or not tls.ca_file:
            return settings
        ca_path = self.base_dir / tls.ca_file
        if not ca_path.is_file():
            raise self.error(_join(path, "tls.ca_file"), f"no such file: {ca_path}")
        # Any kind with a `tls` block (http, tls, inference): the key is read by name.
        return replace(settings, **{"tls": replace(tls, ca_file=str(ca_path))})

    def refuse_unknown(
        self, raw: dict[str, Any], allowed: Any, path: str, kind: str | None = None
    ) -> None:
        for key in raw:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1)
                article = "an" if kind and kind[0] in "aeiou" else "a"
                what = f"for {article} {kind} endpoint" if kind else "here"
                message = f"unknown key {key!r} {what}"
                message += f"; did you mean {hint[0]!r}?" if hint else ""
                message += f" (accepted: {', '.join(sorted(map(str, allowed)))})"
                raise self.error(_join(path, str(key)), message)

    def read(self, reader: schema.Reader, value: Any, path: str, key: str | None = None) -> Any:
        """The value as `reader` reads it; errors name `path` (joined with `key` when given:
        joining only on an error is 5 % of check-config at 100,000 endpoints)."""
        # Only plain text and numbers are remembered: a Secret equals its text but must stay one.
        plain = type(value) in _PLAIN
        if plain and (reader, type(value), value) in self.known:
            return self.known[reader, type(value), value]
        try:
            result = reader(value)
        except FieldError as exc:
            where = path if key is None else _join(path, key)
            raise self.error(_sub(where, exc.key), exc.message) from None
        except ValueError as exc:
            raise self.error(path if key is None else _join(path, key), str(exc)) from None
        if plain:
            self.known[reader, type(value), value] = result
        return result

    def read_inherited(self, reader: schema.Reader, value: Any, path: str, key: str) -> Any:
        """Read a mapping or list every endpoint of a region inherits as the same object."""
        if (reader, id(value)) not in self.read_once:
            self.read_once[reader, id(value)] = self.read(reader, value, path, key)
        return self.read_once[reader, id(value)]

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_kind_of(value)}")
        return value

    # -- daemon sections -----------------------------------------------------------------------
    def check_exporter(self, exporter: ExporterSettings) -> None:
        """What the key table cannot say alone: auth comes whole, and one kind at a time."""
        if (exporter.username is None) != (exporter.password is None):
            raise self.error("exporter.auth", "basic auth needs both username and password")
        if exporter.bearer_token is not None and exporter.username is not None:
            raise self.error("exporter.auth", "choose bearer_token or username/password, not both")
        if exporter.protect_metrics and not exporter.auth_required:
            raise self.error("exporter.protect_metrics", "needs exporter.auth to be set")


_MISSING: Any = object()
_NO_OVERRIDES = overrides({})
_PLAIN = (str, int, float, bool)


def _dependencies(value: Any) -> tuple[str, ...]:
    """A list of `region/endpoint` or bare `region` names."""
    if not isinstance(value, list):
        value = [value]
    found = []
    for index, item in enumerate(value):
        name = _plain(item)
        parts = name.split("/") if isinstance(name, str) else []
        if not 1 <= len(parts) <= 2 or not all(_NAME.fullmatch(p) for p in parts):
            raise FieldError(
                f"[{index}]",
                f"{name!r} is not region/endpoint or a region name (like eu-west/db or eu-west)",
            )
        if name not in found:
            found.append(name)
    return tuple(found)


def _cycle(start: str, edges: dict[str, tuple[str, ...]], done: set[str]) -> list[str]:
    """The first chain from `start` that comes back to an endpoint on it, as
    [a, b, ..., a]; empty when none. `done`: endpoints already known to lead to no cycle."""
    path: list[str] = []
    on_path: set[str] = set()
    stack: list[tuple[str, int]] = [(start, 0)]
    while stack:
        node, index = stack.pop()
        if index == 0:
            if node in on_path:
                return [*path[path.index(node) :], node]
            if node in done:
                continue
            path.append(node)
            on_path.add(node)
        targets = edges.get(node, ())
        if index < len(targets):
            stack.append((node, index + 1))
            stack.append((targets[index], 0))
        else:
            path.pop()
            on_path.discard(node)
            done.add(node)
    return []


def _merge_levels(levels: list[dict[str, Any]], key: str) -> Any:
    """The value of `key` after global → region → endpoint; mappings merge key by key."""
    merged: Any = _MISSING
    for level in levels:
        if key not in level:
            continue
        value = level[key]
        if key in MERGED_MAPPINGS and isinstance(value, dict) and isinstance(merged, dict):
            merged = {**merged, **value}
        else:
            merged = value
    return merged


def _has_text(value: Any) -> bool:
    """Whether interpolation could change the value: text with a `$`, or a container."""
    return isinstance(value, dict | list) or (isinstance(value, str) and "$" in value)


def _plain(value: Any) -> Any:
    return value.reveal() if isinstance(value, Secret) else value


def _sub(path: str, key: str) -> str:
    """A sub-key path under `path`: `inputs[0].shape`, not `inputs.[0].shape`."""
    return f"{path}{key}" if key.startswith("[") else _join(path, key)


def _default_keys(kinds: list[str]) -> dict[str, Option]:
    """The keys a defaults section takes: the common ones, and those of these kinds that have a
    default (the first kind's reader, where two kinds share a key)."""
    allowed: dict[str, Option] = dict(COMMON_OPTIONS)
    for kind in kinds:
        for key, option in probe_kind(kind).options.items():
            if option.default is not REQUIRED:
                allowed.setdefault(key, option)
    return allowed


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _within(path: str, outer: str) -> bool:
    """Whether key path `path` is `outer` or lies inside it."""
    return path == outer or path.startswith((f"{outer}.", f"{outer}["))


def _kind_of(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return "nothing" if value is None else names.get(type(value), type(value).__name__)
