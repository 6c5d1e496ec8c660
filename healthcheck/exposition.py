"""The /metrics body from families, the per-endpoint families' label sets from templates.

prometheus_client's encoders sort, validate and escape every label of every sample: at 1,000
endpoints that was ~34,000 lines and 1.3 s of Python per text scrape, 2.3 s in OpenMetrics
(what Prometheus asks for), most of it on the same few label sets again and again. Here the
negotiated encoder still writes every family's HELP and TYPE lines, every family but the
per-endpoint ones (and the `# EOF`), and the shape of each kind of label set: once per set of
label names and extra label name (`le`, `result`, ...), label values in slots, kept from one
render to the next in the process that renders, with every label value it escapes that is
not plain text. An endpoint's label set is its shape filled with its values; a per-endpoint
sample line is then that label set, the sample's name and its value in prometheus_client's
`floatToGoString`: the same bytes the encoder would write (tests/healthcheck/test_exposition.py
renders both ways, in every format it negotiates). The label sets themselves were once kept
between renders: at 20,000 endpoints 140,000 of them, ~75 MB of the helper's RSS.

A family's lines are joined and encoded CHUNK_LINES at a time, and the body goes out as those
chunks (into gzip when asked): at 20,000 endpoints a render is 680,000 lines, 62 MB of text.
Kept as one str per line, then joined and encoded whole, it took the helper process that
renders to ~350 MB of RSS at its peak. A family's samples are written as the body takes its
chunks (`Samples.stream`): a gzipped render holds one chunk of text at a time, not the
~45 MB of its biggest families.
"""

from __future__ import annotations

import gzip
import io
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Encoder = Callable[[Collector], bytes]

CHUNK_LINES = 4096  # sample lines joined and encoded at a time
_MARK = "\ue000mark\ue000"  # a label value unchanged by escaping (made longer if one holds it)
_EOF = "# EOF\n"
_EOF_BYTES = _EOF.encode()


class _Families:
    """A collector of given families (what an encoder takes)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)

    def describe(self) -> list[Metric]:
        return []


@dataclass(frozen=True, slots=True)
class _Template:
    """How one format's encoder writes a label set of given label names (and the extra
    label): %-formats of the text before the extra label's value and after it, and which of
    the label values (escaped) each takes, in order."""

    head: str
    head_values: Callable[[tuple[str, ...]], tuple[str, ...]]
    tail: str
    tail_values: Callable[[tuple[str, ...]], tuple[str, ...]]


@dataclass(slots=True)
class Known:
    """What one format's encoder writes: label sets' shapes by (label names, extra label
    name), escaped label values that are not plain text, sample names."""

    templates: dict[tuple[tuple[str, ...], str | None], _Template] = field(default_factory=dict)
    values: dict[tuple[str, str], str] = field(default_factory=dict)  # (label, value) -> text
    names: dict[str, str | None] = field(default_factory=dict)  # sample name -> text


_KNOWN: dict[str, Known] = {}  # per content type (format and escaping)
_KNOWN_LOCK = threading.Lock()
_SLOT = re.compile("\ue000([0-9]+)\ue000")  # where a template's label values go
_EXTRA = "\ue000x\ue000"
# Every character but the two the formats escape (and newline): a value of these only is
# written as it is (checked against the encoder once per format)
_PLAIN = "".join(chr(c) for c in range(32, 127) if chr(c) not in '"\\')


def _picker(at: Sequence[int]) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    if len(at) >= 2:
        pick: Callable[[tuple[str, ...]], tuple[str, ...]] = itemgetter(*at)
        return pick
    if at:
        index = at[0]
        return lambda values: (values[index],)
    return lambda values: ()


def _format(text: str) -> tuple[str, list[int]]:
    """A %-format of an encoded label set with slots, and the slots' value indexes."""
    parts = _SLOT.split(text)
    return "%s".join(part.replace("%", "%%") for part in parts[0::2]), [
        int(index) for index in parts[1::2]
    ]


class Labels:
    """Encoded label sets for one render, made from the shapes its format's encoder writes
    (kept from one render to the next) and each endpoint's label values. Nothing per
    endpoint outlives the render: kept from one to the next, the label sets of 20,000
    endpoints were ~75 MB of the helper process's RSS between renders."""

    def __init__(self, encoder: Encoder, content_type: str) -> None:
        self.encoder = encoder
        self.content_type = content_type
        with _KNOWN_LOCK:
            self.known = _KNOWN.get(content_type) or Known()
        self.used = Known()
        self._counts: dict[int, str] = {}  # an integer count as floatToGoString writes it
        self._bounds: dict[tuple[str, ...], list[str]] = {}
        # per label names, per label values: the values escaped and their label set, for this
        # render only (at 20,000 endpoints, a few MB)
        self._escaped: dict[
            tuple[str, ...], dict[tuple[str, ...], tuple[tuple[str, ...], str]]
        ] = {}
        self._plain: bool | None = None  # plain text written as it is (asked once)

    def finish(self) -> None:
        """Keep what this render used for the next one of its format."""
        with _KNOWN_LOCK:
            _KNOWN[self.content_type] = self.used

    def of(
        self, values: tuple[str, ...], columns: tuple[str, ...], extra: str | None = None
    ) -> tuple[str, str]:
        """`{...}` as the encoder writes it for these label values (then ("{...}", "")), or
        with one more label `extra` whose value goes between the two parts."""
        if extra is None:
            return self.plain(values, columns), ""
        template = self.used.templates.get((columns, extra))
        if template is None:
            template = self._template(columns, extra)
        escaped = self._entry(values, columns)[0]
        return (
            template.head % template.head_values(escaped),
            template.tail % template.tail_values(escaped),
        )

    def plain(self, values: tuple[str, ...], columns: tuple[str, ...]) -> str:
        """`{...}` as the encoder writes it for these label values (no extra label)."""
        return self._entry(values, columns)[1]

    def _entry(
        self, values: tuple[str, ...], columns: tuple[str, ...]
    ) -> tuple[tuple[str, ...], str]:
        """The values escaped and their label set, made once per render (many families use
        them)."""
        by_values = self._escaped.get(columns)
        if by_values is None:
            by_values = self._escaped[columns] = {}
        found = by_values.get(values)
        if found is None:
            escaped = self._escape(values, columns)
            template = self.used.templates.get((columns, None))
            if template is None:
                template = self._template(columns, None)
            found = by_values[values] = (escaped, template.head % template.head_values(escaped))
        return found

    def _template(self, columns: tuple[str, ...], extra: str | None) -> _Template:
        key = (columns, extra)
        found = self.known.templates.get(key)
        if found is None:
            slots = tuple(f"\ue000{i}\ue000" for i in range(len(columns)))
            head, tail = self._encode(slots, columns, extra, _EXTRA)
            head_format, head_at = _format(head)
            tail_format, tail_at = _format(tail)
            if sorted(head_at + tail_at) != list(range(len(columns))):
                raise ValueError(f"unexpected label set from the encoder: {head!r}, {tail!r}")
            found = _Template(head_format, _picker(head_at), tail_format, _picker(tail_at))
        self.used.templates[key] = found
        return found

    def _escape(self, values: tuple[str, ...], columns: tuple[str, ...]) -> tuple[str, ...]:
        """Label values as the encoder escapes them (plain ones as they are)."""
        if self._plain is None:
            self._plain = self.value("x", _PLAIN) == _PLAIN
        plain = self._plain
        if plain and all(
            value.isascii() and value.isprintable() and '"' not in value and "\\" not in value
            for value in values
        ):
            return values
        return tuple(self.value(label, value) for label, value in zip(columns, values, strict=True))

    def value(self, label: str, value: str) -> str:
        """A label value as the encoder escapes it."""
        key = (label, value)
        found = self.used.values.get(key)
        if found is None:
            found = self.known.values.get(key)
            if found is None:
                head, _ = self._encode((value,), (label,), None)
                around_head, around_tail = self._encode((), (), label)
                found = head[len(around_head) : len(head) - len(around_tail)]
            self.used.values[key] = found
        return found

    def name(self, sample: str) -> str | None:
        """A sample's name as the encoder writes it before the braces (the escapings may
        rewrite it); None where it goes inside them (a UTF-8 name, quoted)."""
        if sample in self.used.names:
            return self.used.names[sample]
        found = self.known.names.get(sample, _MARK)
        if found == _MARK:
            family = GaugeMetricFamily(sample, "x", value=0.0)
            line = self._line(family)
            found = line[:-4] if line.endswith(" 0.0") and not line.startswith("{") else None
        self.used.names[sample] = found
        return found

    def number(self, value: float) -> str:
        """A sample value as prometheus_client writes it; integers (counts) remembered."""
        if type(value) is not int:
            text: str = floatToGoString(value)
            return text
        found = self._counts.get(value)
        if found is None:
            found = self._counts[value] = floatToGoString(value)
        return found

    def bounds(self, le: Sequence[str]) -> list[str]:
        """A histogram's `le` values, escaped."""
        key = tuple(le)
        found = self._bounds.get(key)
        if found is None:
            found = self._bounds[key] = [self.value("le", bound) for bound in key]
        return found

    def _encode(
        self,
        values: tuple[str, ...],
        columns: tuple[str, ...],
        extra: str | None,
        mark: str = _MARK,
    ) -> tuple[str, str]:
        family = GaugeMetricFamily(
            "x", "x", labels=(*columns, extra) if extra is not None else columns
        )
        while any(mark in value for value in values):  # an operator's label may hold it
            mark += _MARK
        family.add_metric((*values, mark) if extra is not None else values, 0.0)
        line = self._line(family)
        if not (line.startswith("x") and line.endswith(" 0.0")):
            raise ValueError(f"unexpected sample line from the encoder: {line!r}")
        labels = line[1:-4]
        if extra is None:
            return labels, ""
        head, _, tail = labels.partition(mark)
        return head, tail

    def _line(self, family: Metric) -> str:
        """The encoder's line of a family's one sample (after its HELP and TYPE)."""
        return self.encoder(_Families([family])).decode().split("\n")[2]


@dataclass(slots=True)
class Encoded:
    """A family whose sample lines come as encoded chunks, written as they are taken:
    `family` (no samples) gives the encoder its HELP and TYPE lines."""

    family: Metric
    chunks: Iterable[bytes]


def body(
    families: Iterable[Metric | Encoded],
    encoder: Encoder,
    labels: Labels | None = None,
    gzipped: bool = False,
) -> bytes:
    """The families in order, as the encoder writes them, the encoded ones' lines as they
    are: one `# EOF` at the end where the format has one. `gzipped`: compressed chunk by
    chunk as they come (level 1: ~10x smaller, several times faster than the default 9 on
    text this repetitive), the whole text never held."""
    written = io.BytesIO()
    if not gzipped:
        for part in _parts(families, encoder, labels):
            written.write(part)
        return written.getvalue()
    with gzip.GzipFile(fileobj=written, mode="wb", compresslevel=1) as out:
        for part in _parts(families, encoder, labels):
            out.write(part)
    return written.getvalue()


def _parts(
    families: Iterable[Metric | Encoded], encoder: Encoder, labels: Labels | None
) -> Iterator[bytes]:
    plain: list[Metric] = []
    eof = False

    def encode(batch: Sequence[Metric]) -> bytes:
        nonlocal eof
        text = encoder(_Families(batch))
        if text.endswith(_EOF_BYTES):
            eof = True
            text = text[: -len(_EOF_BYTES)]
        return text

    for family in families:
        if isinstance(family, Encoded):
            if plain:
                yield encode(plain)
                plain = []
            yield encode([family.family])
            yield from family.chunks
        else:
            plain.append(family)
    yield encode(plain)
    if eof:
        yield _EOF_BYTES
    if labels is not None:
        labels.finish()


class Samples:
    """One per-endpoint family being filled: through prometheus_client's `add_metric`
    (`labels` None: the reference path) or as lines over encoded label sets."""

    def __init__(
        self,
        family: GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily,
        columns: tuple[str, ...],
        extra: str | None,
        labels: Labels | None,
    ) -> None:
        self.family = family
        self.columns = columns
        self.extra = extra  # the label after the endpoint's own, if any (`result`, `le`...)
        self.lines: list[str] = []  # written since the last chunk
        self.chunks: list[bytes] = []
        self.name = self.count = self.sum = ""  # the sample names as the encoder writes them
        self._last: tuple[tuple[str, ...], str, str] | None = None  # values, their label set
        if labels is not None:
            suffixes: tuple[str, ...]
            if family.type == "histogram":
                suffixes = ("_bucket", "_count", "_sum")
            else:
                suffixes = ("_total",) if family.type == "counter" else ("",)
            names = [labels.name(family.name + suffix) for suffix in suffixes]
            written = [name for name in names if name is not None]
            if len(written) < len(names):
                labels = None  # a name inside the braces (quoted UTF-8): the encoder's path
            elif len(written) == 3:
                self.name, self.count, self.sum = written
            else:
                self.name = written[0]
        self.labels = labels

    def add(self, values: tuple[str, ...], value: float, extra: str | None = None) -> None:
        """One sample: the endpoint's label values, `extra` the value of the extra label."""
        labels = self.labels
        if labels is None:
            family = self.family
            assert not isinstance(family, HistogramMetricFamily)
            family.add_metric((*values, extra) if extra is not None else values, value)
        elif extra is None:
            self.lines.append(
                f"{self.name}{labels.plain(values, self.columns)} {labels.number(value)}\n"
            )
        else:
            assert self.extra is not None
            last = self._last
            if last is not None and last[0] == values:  # an endpoint's samples come together
                _, head, tail = last
            else:
                head, tail = labels.of(values, self.columns, self.extra)
                self._last = (values, head, tail)
            self.lines.append(
                f"{self.name}{head}{labels.value(self.extra, extra)}{tail} {labels.number(value)}\n"
            )
        if len(self.lines) >= CHUNK_LINES:
            self._chunk()

    def histogram(
        self, values: tuple[str, ...], le: Sequence[str], counts: Iterable[int], total: float
    ) -> None:
        """One histogram: `le` the bounds as written (the last "+Inf"), counts per bucket
        (not cumulative), the sum."""
        labels = self.labels
        if labels is None:
            cumulative = 0
            buckets = []
            for bound, count in zip(le, counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            assert isinstance(self.family, HistogramMetricFamily)
            self.family.add_metric(values, buckets, total)
            return
        head, tail = labels.of(values, self.columns, "le")
        name = self.name
        lines = self.lines
        number = labels.number
        cumulative = 0
        for bound, count in zip(labels.bounds(le), counts, strict=True):
            cumulative += count
            lines.append(f"{name}{head}{bound}{tail} {number(cumulative)}\n")
        if float(le[0]) >= 0:  # as HistogramMetricFamily: no count and sum below zero
            plain = labels.plain(values, self.columns)
            lines.append(f"{self.count}{plain} {number(cumulative)}\n")
            lines.append(f"{self.sum}{plain} {floatToGoString(total)}\n")
        if len(lines) >= CHUNK_LINES:
            self._chunk()

    def _chunk(self) -> None:
        self.chunks.append("".join(self.lines).encode())
        self.lines.clear()

    def stream(self, steps: Iterable[object]) -> Metric | Encoded:
        """The family, its samples added by `steps` (one step per endpoint, say) as the body
        takes its chunks; on the reference path, added now."""
        if self.labels is None:
            for _ in steps:
                pass
            return self.family
        return Encoded(self.family, self._taken(steps))

    def _taken(self, steps: Iterable[object]) -> Iterator[bytes]:
        chunks = self.chunks
        for _ in steps:
            if chunks:
                yield from chunks
                chunks.clear()
        if self.lines:
            self._chunk()
        yield from chunks
        chunks.clear()
