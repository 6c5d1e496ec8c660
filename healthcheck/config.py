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

from alerting.settings import overrides, read_alerting, read_overrides
from healthcheck import schema
from healthcheck.conditions import Condition, ConditionSyntaxError, parse_condition
from healthcheck.durations import parse_duration
from healthcheck.errors import ConfigError
from healthcheck.prober import REGISTRY
from healthcheck.probes.base import Probe
from healthcheck.schema import REQUIRED, FieldError, Option
from healthcheck.secrets import Redactor, Secret
from healthcheck.targets import (
    Config,
    Endpoint,
    ExporterSettings,
    Region,
    SchedulerSettings,
    StorageSettings,
)

DEFAULT_LATENCY = {"warning": 0.1, "critical": 0.5}

COMMON_OPTIONS: dict[str, Option] = {
    "interval": Option(schema.duration, 30.0, "how often to check"),
    "timeout": Option(schema.duration, 5.0, "limit for one attempt"),
    "retries": Option(schema.integer(0, 10), 1, "extra attempts inside one check"),
    "latency": Option(lambda v: schema.sub_mapping(v, schema.LATENCY_KEYS), DEFAULT_LATENCY),
    "conditions": Option(lambda v: v, ()),  # parsed per endpoint, with the kind's placeholders
    "alerts": Option(read_overrides, {}, "rule settings for this endpoint; enabled: false mutes"),
}
ENDPOINT_KEYS = {"name", "kind", "enabled"}
MERGED_MAPPINGS = {"latency", "headers", "tls", "alerts"}  # merged key by key down the levels
TOP_LEVEL_KEYS = ("defaults", "regions", "scheduler", "storage", "exporter", "alerting", "sla")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
# A value this short is too common to scrub from every log line (a port, "true").
_MIN_SECRET_LENGTH = 6


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping instead of keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"key {key!r} appears twice",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a configuration file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", file=source) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", file=source) from None
    return parse_config(text, source, environ)


def parse_config(text: str, source: str, environ: Mapping[str, str] | None = None) -> Config:
    """Validate configuration text; `source` names it in error messages."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}invalid YAML: {exc.problem}", file=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=source) from None
    builder = _Builder(source, os.environ if environ is None else environ)
    return builder.build(data)


class _Builder:
    """Walks the parsed YAML once, collecting secrets and raising the first error found."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = Path(source).parent
        self.secrets: set[str] = set()

    def error(self, path: str, message: str) -> ConfigError:
        # A value that came from the environment may be echoed back: never show it.
        return ConfigError(Redactor(self.secrets)(message), file=self.source, path=path or None)

    # -- interpolation -------------------------------------------------------------------------
    def interpolate(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {key: self.interpolate(item, _join(path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.interpolate(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            return self._substitute(value, path)
        return value

    def _substitute(self, value: str, path: str) -> str | Secret:
        from_environment = False

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
            raise self.error(
                path,
                f"environment variable {name} is not set (write ${{{name}:-default}} to allow)",
            )

        result = _INTERPOLATION.sub(replace, value)
        return Secret(result) if from_environment else result

    # -- whole file ----------------------------------------------------------------------------
    def build(self, data: Any) -> Config:
        if data is None:
            raise self.error("", "the file is empty; it needs at least a 'regions' mapping")
        if not isinstance(data, dict):
            raise self.error("", f"expected a mapping at the top level, got {_kind_of(data)}")
        data = self.interpolate(data, "")
        self.refuse_unknown(data, TOP_LEVEL_KEYS, "")
        scheduler = self.section(data, "scheduler", SchedulerSettings, _SCHEDULER_KEYS)
        storage = self.storage(data.get("storage"))
        exporter = self.exporter(data.get("exporter"))
        alerting = self.read(read_alerting, data.get("alerting") or {}, "alerting")
        sla = self.read(lambda v: schema.sub_mapping(v, _SLA_KEYS), data.get("sla") or {}, "sla")
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
        return Config(
            source=self.source,
            regions=regions,
            scheduler=scheduler,
            storage=storage,
            exporter=exporter,
            alerting=alerting,
            sla_target=sla.get("target", 0.999),
            secrets=frozenset(self.secrets),
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
        for index, item in enumerate(endpoints_raw):
            item_path = f"{endpoints_path}[{index}]"
            item = self.mapping(item, item_path)
            endpoint = self.endpoint(name, item, [defaults, region_defaults], item_path)
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
        self, region: str, raw: dict[str, Any], levels: list[dict[str, Any]], path: str
    ) -> Endpoint:
        name = raw.get("name")
        if name is None:
            raise self.error(_join(path, "name"), "missing: every endpoint needs a name")
        name = _plain(name)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise self.error(
                _join(path, "name"),
                f"{name!r} is not a valid name: use letters, digits, '-', '_', '.' (max 63)",
            )
        kind_name = _plain(raw.get("kind", "http"))
        probe = REGISTRY.get(kind_name) if isinstance(kind_name, str) else None
        if probe is None:
            raise self.error(
                _join(path, "kind"),
                f"unknown kind {kind_name!r}; expected one of {', '.join(sorted(REGISTRY))}",
            )
        options = {**COMMON_OPTIONS, **probe.options}
        self.refuse_unknown(raw, (*ENDPOINT_KEYS, *options), path, kind=kind_name)
        if "enabled" in raw:
            self.read(schema.boolean, raw["enabled"], _join(path, "enabled"))

        values: dict[str, Any] = {}
        for key, option in options.items():
            merged = _merge_levels([*levels, raw], key)
            if merged is _MISSING:
                if option.default is REQUIRED:
                    raise self.error(
                        _join(path, key), f"missing: a {kind_name} endpoint needs '{key}'"
                    )
                values[key] = option.default
            elif key == "conditions":
                values[key] = self.conditions(merged, probe, _join(path, key))
            else:
                values[key] = self.read(option.read, merged, _join(path, key))

        latency = {**DEFAULT_LATENCY, **values["latency"]}
        self.check_latency(latency, _join(path, "latency"))
        if values["timeout"] > values["interval"]:
            raise self.error(
                _join(path, "timeout"),
                f"timeout ({values['timeout']:g}s) is longer than the interval "
                f"({values['interval']:g}s); checks of one endpoint must not overlap",
            )
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
            alerts=overrides(values["alerts"]),
        )

    def conditions(self, raw: Any, probe: type[Probe], path: str) -> tuple[Condition, ...]:
        if not isinstance(raw, list):
            raise self.error(path, f"expected a list of condition strings, got {_kind_of(raw)}")
        parsed = []
        for index, text in enumerate(raw):
            item_path = f"{path}[{index}]"
            text = _plain(text)
            if not isinstance(text, str):
                raise self.error(item_path, f"expected a condition string, got {_kind_of(text)}")
            try:
                condition = parse_condition(text)
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
    def check_defaults(self, defaults: dict[str, Any], path: str) -> None:
        """Defaults take any key some kind takes; each value is checked where it is written."""
        allowed: dict[str, Option] = dict(COMMON_OPTIONS)
        for probe in REGISTRY.values():
            for key, option in probe.options.items():
                if option.default is not REQUIRED:
                    allowed.setdefault(key, option)
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

    def resolve_files(self, settings: Any, path: str) -> Any:
        """A CA file must exist; a relative path is taken from the config file's folder."""
        tls = getattr(settings, "tls", None)
        if tls is None or not tls.ca_file:
            return settings
        ca_path = self.base_dir / tls.ca_file
        if not ca_path.is_file():
            raise self.error(_join(path, "tls.ca_file"), f"no such file: {ca_path}")
        return replace(settings, tls=replace(tls, ca_file=str(ca_path)))

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

    def read(self, reader: schema.Reader, value: Any, path: str) -> Any:
        try:
            return reader(value)
        except FieldError as exc:
            raise self.error(_sub(path, exc.key), exc.message) from None
        except ValueError as exc:
            raise self.error(path, str(exc)) from None

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_kind_of(value)}")
        return value

    # -- daemon sections -----------------------------------------------------------------------
    def section(self, data: dict[str, Any], key: str, cls: type, keys: dict[str, Any]) -> Any:
        if data.get(key) is None:
            return cls()
        return cls(**self.read(lambda v: schema.sub_mapping(v, keys), data[key], key))

    def storage(self, raw: Any) -> StorageSettings:
        if raw is None:
            return StorageSettings()
        values = self.read(lambda v: schema.sub_mapping(v, _STORAGE_KEYS), raw, "storage")
        retention = values.pop("retention", {})
        defaults = StorageSettings()
        return StorageSettings(
            path=values.get("path"),
            retention_raw=retention.get("raw", defaults.retention_raw),
            retention_raw_rows=retention.get("raw_rows"),
            retention_rollups=retention.get("rollups", defaults.retention_rollups),
            max_queue=values.get("max_queue", defaults.max_queue),
        )

    def exporter(self, raw: Any) -> ExporterSettings:
        if raw is None:
            return ExporterSettings()
        values = self.read(lambda v: schema.sub_mapping(v, _EXPORTER_KEYS), raw, "exporter")
        host, port = values.pop("listen", (ExporterSettings.host, ExporterSettings.port))
        auth = values.pop("auth", {})
        if ("username" in auth) != ("password" in auth):
            raise self.error("exporter.auth", "basic auth needs both username and password")
        if "bearer_token" in auth and "username" in auth:
            raise self.error("exporter.auth", "choose bearer_token or username/password, not both")
        if values.get("protect_metrics") and not auth:
            raise self.error("exporter.protect_metrics", "needs exporter.auth to be set")
        return ExporterSettings(host=host, port=port, **auth, **values)


_SCHEDULER_KEYS: dict[str, schema.Reader] = {
    "max_concurrency": schema.integer(1, 100_000),
    "rate_limit": schema.integer(1, 1_000_000),
    "jitter": lambda v: _fraction(v, 0.5),
    "tick": lambda v: _tick(v),
}


def _bounded_duration(value: Any, least: float, most: float) -> float:
    """A duration from `least` to `most` seconds."""
    seconds = schema.duration(value)
    if not least <= seconds <= most:
        raise ValueError(f"expected a duration from {least:g}s to {most:g}s, got {seconds:g}s")
    return seconds


def _tick(value: Any) -> float:
    """A duration from 0s (each check on its exact due time) to 1s."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 50ms, got {value!r}")
    seconds = float(value) if isinstance(value, int | float) else parse_duration(schema.text(value))
    if not 0 <= seconds <= 1:
        raise ValueError(f"expected a duration from 0s to 1s, got {seconds:g}s")
    return seconds


_RETENTION_KEYS: dict[str, schema.Reader] = {
    "raw": schema.duration,
    "raw_rows": schema.integer(1),
    "rollups": schema.duration,
}
_STORAGE_KEYS: dict[str, schema.Reader] = {
    "path": schema.optional(schema.text),
    "retention": lambda v: schema.sub_mapping(
        v, {"raw": schema.duration, "rollups": schema.duration}
    ),
}
_AUTH_KEYS: dict[str, schema.Reader] = {
    "bearer_token": schema.secret,
    "username": schema.text,
    "password": schema.secret,
}
_EXPORTER_KEYS: dict[str, schema.Reader] = {
    "listen": schema.listen_address,
    "auth": lambda v: schema.sub_mapping(v, _AUTH_KEYS),
    "protect_metrics": schema.boolean,
    "max_connections": schema.integer(1, 65_536),
    "read_timeout": lambda v: _bounded_duration(v, 0.1, 300.0),
    "blackbox_names": schema.boolean,
}
_SLA_KEYS: dict[str, schema.Reader] = {"target": schema.ratio}

_MISSING: Any = object()


def _fraction(value: Any, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise ValueError(f"expected a number from 0 to {maximum}, got {value!r}")
    return float(value)


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


def _plain(value: Any) -> Any:
    return value.reveal() if isinstance(value, Secret) else value


def _sub(path: str, key: str) -> str:
    """A sub-key path under `path`: `inputs[0].shape`, not `inputs.[0].shape`."""
    return f"{path}{key}" if key.startswith("[") else _join(path, key)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind_of(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return "nothing" if value is None else names.get(type(value), type(value).__name__)
