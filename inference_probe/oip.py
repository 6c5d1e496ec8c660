"""The Open Inference Protocol (KServe v2) side of the remote canary: reading the configured
tensors, building the infer request, reading the answer and comparing it with the expected one."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from healthcheck import schema
from healthcheck.probes.grpc_health import NOT_READY
from healthcheck.result import ErrorClass
from healthcheck.schema import FieldError, TlsOptions
from healthcheck.secrets import Secret
from healthcheck.targets import ProbeSettings

if TYPE_CHECKING:
    import numpy as np

_AUTH_STATUSES = frozenset({401, 403, 407})  # a refusal, not a server saying it is not ready
_SNIPPET = 200  # longest piece of a server's error text quoted

# Each integer datatype's bounds, without numpy: reading a configuration must not need it.
_INTEGERS = {
    f"{'U' if unsigned else ''}INT{bits}": (0, 2**bits - 1)
    if unsigned
    else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    for unsigned in (True, False)
    for bits in (8, 16, 32, 64)
}
DATATYPES = ("BOOL", *_INTEGERS, "FP16", "FP32", "FP64", "BYTES")


# -- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TensorInput:
    """One input of the canary request; `data` is flattened in row-major order."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: tuple[bool | int | float | str, ...]


@dataclass(frozen=True, slots=True)
class ExpectedOutput:
    """Golden values of one output, flattened; `shape` is checked only when given."""

    name: str
    data: tuple[float, ...]
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Tolerance:
    atol: float = 1e-3
    rtol: float = 1e-3


@dataclass(frozen=True, slots=True)
class InferenceSettings(ProbeSettings):
    url: str
    model_name: str
    inputs: tuple[TensorInput, ...]
    expected: tuple[ExpectedOutput, ...]
    model_version: str | None = None
    headers: tuple[tuple[str, str | Secret], ...] = ()
    tls: TlsOptions = field(default_factory=TlsOptions)
    tolerance: Tolerance = field(default_factory=Tolerance)
    protocol: str = "http"  # or "grpc": the protocol's gRPC binding (inference_probe.oip_grpc)

    @property
    def model_path(self) -> str:
        path = f"/v2/models/{quote(self.model_name, safe='')}"
        if self.model_version is not None:
            path += f"/versions/{quote(self.model_version, safe='')}"
        return path

    @property
    def model_label(self) -> str:
        version = f" version {self.model_version}" if self.model_version is not None else ""
        return f"model {self.model_name!r}{version}"


# -- config readers ----------------------------------------------------------------------------
def _nested(prefix: str, exc: FieldError) -> FieldError:
    separator = "" if exc.key.startswith("[") else "."
    return FieldError(f"{prefix}{separator}{exc.key}", exc.message)


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string, not a float
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _non_negative(value: object) -> float:
    number = _number(value)
    if not 0 <= number < math.inf:
        raise ValueError(f"must be a finite number of at least 0, got {value!r}")
    return number


def read_tolerance(value: object) -> Tolerance:
    """`{atol: 1e-3, rtol: 1e-3}`, or one number for both."""
    if isinstance(value, Mapping):
        keys = {"atol": _non_negative, "rtol": _non_negative}
        return Tolerance(**schema.sub_mapping(value, keys))
    number = _non_negative(value)
    return Tolerance(atol=number, rtol=number)


def read_name(value: object) -> str:
    name = schema.text(value)
    if not name or "/" in name or any(ch.isspace() for ch in name):
        raise ValueError(f"expected a name without '/' or spaces, got {value!r}")
    return name


def read_version(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return read_name(value)


def _shape(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in value
    ):
        raise ValueError(
            f"expected a list of whole numbers of at least 0, like [1, 4], got {value!r}"
        )
    return tuple(value)


def _flatten(value: object) -> list[Any]:
    """Nested lists in row-major order, as the protocol allows for `data`."""
    if not isinstance(value, list):
        return [value]
    return [item for part in value for item in _flatten(part)]


def _data(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of values, got {value!r}")
    return _flatten(value)


def _element_reader(datatype: str) -> Callable[[Any], bool | int | float | str]:
    if datatype == "BOOL":
        return schema.boolean
    if datatype == "BYTES":
        return schema.text
    if datatype in _INTEGERS:
        return schema.integer(*_INTEGERS[datatype])
    return _number


def _check_count(shape: tuple[int, ...], data: list[Any]) -> None:
    if math.prod(shape) != len(data):
        raise FieldError(
            "shape",
            f"shape {list(shape)} holds {math.prod(shape)} values but data has {len(data)}",
        )


_INPUT_KEYS = {
    "name": read_name,
    "datatype": schema.choice(*DATATYPES),
    "shape": _shape,
    "data": _data,
}
_EXPECTED_KEYS = {"name": read_name, "shape": _shape, "data": _data}


def _missing(fields: Mapping[str, Any], required: tuple[str, ...], what: str) -> None:
    for key in required:
        if key not in fields:
            raise FieldError(key, f"missing: {what} needs {', '.join(required)}")


def read_input(value: object) -> TensorInput:
    fields = schema.sub_mapping(value, _INPUT_KEYS)
    _missing(fields, tuple(_INPUT_KEYS), "an input")
    read = _element_reader(fields["datatype"])
    data = []
    for index, item in enumerate(fields["data"]):
        try:
            data.append(read(item))
        except ValueError as exc:
            raise FieldError("data", f"value {index} for {fields['datatype']}: {exc}") from None
    _check_count(fields["shape"], data)
    return TensorInput(fields["name"], fields["datatype"], fields["shape"], tuple(data))


def read_expected(value: object) -> ExpectedOutput:
    fields = schema.sub_mapping(value, _EXPECTED_KEYS)
    _missing(fields, ("name", "data"), "an expected output")
    data = []
    for index, item in enumerate(fields["data"]):
        try:
            data.append(float(item) if isinstance(item, bool) else _number(item))
        except ValueError as exc:
            raise FieldError("data", f"value {index}: {exc}") from None
    if "shape" in fields:
        _check_count(fields["shape"], data)
    return ExpectedOutput(fields["name"], tuple(data), fields.get("shape"))


def list_of(read: Callable[[Any], Any], what: str) -> Callable[[Any], tuple[Any, ...]]:
    def read_all(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError(f"expected a list of at least one {what}")
        items, names = [], set()
        for index, item in enumerate(value):
            try:
                parsed = read(item)
            except FieldError as exc:
                raise _nested(f"[{index}]", exc) from None
            except ValueError as exc:
                raise FieldError(f"[{index}]", str(exc)) from None
            if parsed.name in names:
                raise FieldError(f"[{index}].name", f"{what} {parsed.name!r} is listed twice")
            names.add(parsed.name)
            items.append(parsed)
        return tuple(items)

    return read_all


def read_headers(value: object) -> tuple[tuple[str, str | Secret], ...]:
    return tuple(schema.headers(value).items())


# -- judging an answer (pure) ------------------------------------------------------------------
class InvalidResponse(ValueError):
    """The server answered, but not with what the protocol promises."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """How far one output is from its golden values; errors are None when not finite."""

    name: str
    passed: bool
    max_abs_error: float | None
    max_rel_error: float | None
    not_finite: int = 0

    def describe(self, tolerance: Tolerance) -> str:
        limits = f"(atol {tolerance.atol:g}, rtol {tolerance.rtol:g})"
        if self.not_finite:
            return (
                f"output {self.name!r} differs from expected: {self.not_finite} values are "
                f"NaN or infinite {limits}"
            )
        return (
            f"output {self.name!r} differs from expected: max abs error "
            f"{self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} {limits}"
        )


def infer_request(settings: InferenceSettings) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(tensor.shape),
                "datatype": tensor.datatype,
                "data": list(tensor.data),
            }
            for tensor in settings.inputs
        ],
        "outputs": [{"name": output.name} for output in settings.expected],
    }


def output_values(body: bytes, expected: ExpectedOutput) -> np.ndarray:
    """The named output's values, flattened, from an infer answer; raise InvalidResponse."""
    import numpy as np  # loaded by InferenceProbe.start, off the event loop

    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidResponse("the infer answer is not valid JSON") from None
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list):
        raise InvalidResponse("the infer answer has no 'outputs' list")
    found = next(
        (o for o in outputs if isinstance(o, dict) and o.get("name") == expected.name), None
    )
    if found is None:
        names = ", ".join(repr(o.get("name")) for o in outputs if isinstance(o, dict)) or "none"
        raise InvalidResponse(f"the infer answer has no output {expected.name!r} (got {names})")
    if not isinstance(found.get("data"), list):
        raise InvalidResponse(f"output {expected.name!r} has no JSON 'data' (binary data?)")
    values = _flatten(found["data"])
    if not all(isinstance(v, int | float) for v in values):
        raise InvalidResponse(f"output {expected.name!r} holds values that are not numbers")
    try:
        shape = _shape(found.get("shape"))
    except ValueError:
        raise InvalidResponse(f"output {expected.name!r} has no valid 'shape'") from None
    return checked_values(np.asarray(values, dtype=np.float64), shape, expected)


def checked_values(
    values: np.ndarray, shape: tuple[int, ...], expected: ExpectedOutput
) -> np.ndarray:
    """An output's values (float64, flattened) once its shape and count are what the expected
    output says, whichever binding brought them; raise InvalidResponse."""
    if math.prod(shape) != len(values):
        raise InvalidResponse(
            f"output {expected.name!r} has shape {list(shape)} but {len(values)} values"
        )
    if expected.shape is not None and shape != expected.shape:
        raise InvalidResponse(
            f"output {expected.name!r} has shape {list(shape)}, expected {list(expected.shape)}"
        )
    if len(values) != len(expected.data):
        raise InvalidResponse(
            f"output {expected.name!r} has {len(values)} values, expected {len(expected.data)}"
        )
    return values


def compare(actual: np.ndarray, expected: ExpectedOutput, tolerance: Tolerance) -> Comparison:
    """np.allclose decides; the largest absolute and relative errors say by how much."""
    import numpy as np  # loaded by InferenceProbe.start, off the event loop

    golden = np.asarray(expected.data, dtype=np.float64)
    passed = np.allclose(actual, golden, atol=tolerance.atol, rtol=tolerance.rtol, equal_nan=True)
    same = (actual == golden) | (np.isnan(actual) & np.isnan(golden))
    with np.errstate(invalid="ignore"):  # inf - inf
        error = np.where(same, 0.0, np.abs(actual - golden))
    not_finite = int(np.count_nonzero(~np.isfinite(error)))
    if not_finite:
        return Comparison(expected.name, bool(passed), None, None, not_finite)
    # Relative error is undefined where the golden value is 0; atol alone judges those.
    nonzero = np.isfinite(golden) & (golden != 0)
    relative = error[nonzero] / np.abs(golden[nonzero])
    return Comparison(
        expected.name,
        bool(passed),
        float(error.max(initial=0.0)),
        float(relative.max(initial=0.0)),
    )


def readiness_problem(
    status: int, body: bytes, what: str, path: str
) -> tuple[ErrorClass, str] | None:
    """None when a ready endpoint says ready; else the error class and text for the result."""
    if status in _AUTH_STATUSES:
        return ErrorClass.HTTP_STATUS, f"HTTP {status} from GET {path}{server_error(body)}"
    if not 200 <= status < 300:
        hint = (
            " (is url the server's base, without /v2?)"
            if status == 404 and "/models/" not in path
            else ""
        )
        return NOT_READY, f"{what} not ready: GET {path} answered HTTP {status}{hint}"
    try:
        answer = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        answer = None  # the status alone is the protocol; a body is a courtesy
    if isinstance(answer, dict) and answer.get("ready") is False:
        text = f"{what} not ready: GET {path} answered HTTP {status} with ready: false"
        return NOT_READY, text
    return None


def server_error(body: bytes) -> str:
    """`: <the server's error field>`, shortened to one line, or nothing."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    message = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    line = " ".join(message.split())
    return f": {line[:_SNIPPET]}{'…' if len(line) > _SNIPPET else ''}"


# -- the probe ---------------------------------------------------------------------------------
