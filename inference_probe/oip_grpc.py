"""The Open Inference Protocol's gRPC binding for the remote canary (`protocol: grpc`): the
same three questions as over HTTP (ServerReady, ModelReady, ModelInfer), asked of
`inference.GRPCInferenceService` over one channel per check.

The messages are generated from `oip_proto/grpc_predict_v2.proto` and committed (see the
README there); grpcio and they are imported by the first gRPC check only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthcheck.probes.grpc_health import (
    NOT_READY,
    RPC_STATUS,
    SERVICE_UNKNOWN,
    classify_rpc_error,
)
from healthcheck.result import ErrorClass
from healthcheck.secrets import reveal
from inference_probe.oip import ExpectedOutput, InferenceSettings, InvalidResponse, checked_values

if TYPE_CHECKING:
    import numpy as np

SERVICE = "/inference.GRPCInferenceService/"

# Each datatype's field of InferTensorContents, and its little-endian numpy type for raw bytes.
_CONTENTS = {
    "BOOL": ("bool_contents", "?"),
    "INT8": ("int_contents", "<i1"),
    "INT16": ("int_contents", "<i2"),
    "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"),
    "UINT8": ("uint_contents", "<u1"),
    "UINT16": ("uint_contents", "<u2"),
    "UINT32": ("uint_contents", "<u4"),
    "UINT64": ("uint64_contents", "<u8"),
    "FP16": (None, "<f2"),  # no typed field: raw bytes only
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "BYTES": ("bytes_contents", None),
}


class RpcFailure(Exception):
    """A call that did not answer: its error class and text for the result."""

    def __init__(self, error: ErrorClass, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text


class OipChannel:
    """One check's channel to the server; `async with` closes it."""

    def __init__(self, settings: InferenceSettings, roots: bytes | None) -> None:
        # grpc core logs each failed connection to stderr itself; the result says it already.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc

        from inference_probe.oip_proto import grpc_predict_v2_pb2

        self._grpc: Any = grpc
        self.pb2: Any = grpc_predict_v2_pb2
        self.settings = settings
        host_port = settings.url.split("://", 1)[1].split("/", 1)[0]
        options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
        if settings.url.startswith("https:"):
            if settings.tls.server_name:
                options.append(("grpc.ssl_target_name_override", settings.tls.server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            self.channel = grpc.aio.secure_channel(host_port, credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(host_port, options=options)
        self.metadata = tuple((name.lower(), reveal(value)) for name, value in settings.headers)

    async def __aenter__(self) -> OipChannel:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.channel.close()

    async def call(self, method: str, request: Any, answer: type[Any]) -> Any:
        """One unary call; RpcFailure for an error status, with the method named."""
        callable_ = self.channel.unary_unary(
            SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=answer.FromString,
        )
        try:
            return await callable_(request, metadata=self.metadata)
        except self._grpc.aio.AioRpcError as exc:
            raise rpc_failure(method, exc.code().name, exc.details() or "") from None

    async def not_ready(self) -> tuple[ErrorClass, str] | None:
        """Why the server or the model is not ready, or None when both say ready."""
        pb2, settings = self.pb2, self.settings
        server = await self.call("ServerReady", pb2.ServerReadyRequest(), pb2.ServerReadyResponse)
        if not server.ready:
            return NOT_READY, "server not ready: ServerReady answered ready: false"
        request = pb2.ModelReadyRequest(
            name=settings.model_name, version=settings.model_version or ""
        )
        model = await self.call("ModelReady", request, pb2.ModelReadyResponse)
        if not model.ready:
            text = f"{settings.model_label} not ready: ModelReady answered ready: false"
            return NOT_READY, text
        return None

    async def infer(self) -> Any:
        request = infer_request(self.pb2, self.settings)
        return await self.call("ModelInfer", request, self.pb2.ModelInferResponse)

    def as_json(self, response: Any) -> bytes:
        """The infer answer in the protocol's JSON form, for conditions on [BODY]."""
        from google.protobuf import json_format

        text: str = json_format.MessageToJson(response, preserving_proto_field_name=True)
        return text.encode()


def rpc_failure(method: str, code: str, details: str) -> RpcFailure:
    """An error status of one call: the transport's failures keep their classes (as for
    kind: grpc); NOT_FOUND from ModelReady or ModelInfer is a model the server does not have."""
    error, text = classify_rpc_error(code, details, "")
    if error in (SERVICE_UNKNOWN, RPC_STATUS):
        shown = details.strip()[:200]
        error = NOT_READY if code == "NOT_FOUND" else RPC_STATUS
        text = f"{code} from {method}" + (f": {shown}" if shown else "")
    return RpcFailure(error, text)


def infer_request(pb2: Any, settings: InferenceSettings) -> Any:
    """The canary request: typed contents per input, or raw bytes for all of them when one is
    FP16 (the protocol has no typed field for it, and raw inputs are all-or-none)."""
    import numpy as np

    raw = any(_CONTENTS[tensor.datatype][0] is None for tensor in settings.inputs)
    request = pb2.ModelInferRequest(
        model_name=settings.model_name, model_version=settings.model_version or ""
    )
    for tensor in settings.inputs:
        sent = request.inputs.add(name=tensor.name, datatype=tensor.datatype)
        sent.shape.extend(tensor.shape)
        field_name, dtype = _CONTENTS[tensor.datatype]
        if tensor.datatype == "BYTES":
            values = [str(value).encode() for value in tensor.data]
            if raw:  # each element as a 4-byte little-endian length and its bytes
                request.raw_input_contents.append(
                    b"".join(len(v).to_bytes(4, "little") + v for v in values)
                )
            else:
                sent.contents.bytes_contents.extend(values)
        elif raw:
            request.raw_input_contents.append(np.asarray(tensor.data, dtype=dtype).tobytes())
        else:
            getattr(sent.contents, str(field_name)).extend(tensor.data)
    for output in settings.expected:
        request.outputs.add(name=output.name)
    return request


def output_values(response: Any, expected: ExpectedOutput) -> np.ndarray:
    """The named output's values, flattened, from raw bytes or typed contents."""
    import numpy as np

    names = [output.name for output in response.outputs]
    if expected.name not in names:
        got = ", ".join(repr(name) for name in names) or "none"
        raise InvalidResponse(f"the infer answer has no output {expected.name!r} (got {got})")
    index = names.index(expected.name)
    output = response.outputs[index]
    field_name, dtype = _CONTENTS.get(output.datatype, (None, None))
    if dtype is None:
        raise InvalidResponse(f"output {expected.name!r} has datatype {output.datatype!r}")
    if response.raw_output_contents:
        if index >= len(response.raw_output_contents):
            raise InvalidResponse(f"output {expected.name!r} has no raw contents")
        raw = response.raw_output_contents[index]
        if len(raw) % np.dtype(dtype).itemsize:
            raise InvalidResponse(
                f"output {expected.name!r}: {len(raw)} bytes are not whole {output.datatype}"
            )
        values = np.frombuffer(raw, dtype=dtype)
    elif field_name is not None:
        values = np.asarray(getattr(output.contents, field_name))
    else:
        raise InvalidResponse(f"output {expected.name!r} has no contents")
    shape = tuple(int(dim) for dim in output.shape)
    return checked_values(values.astype(np.float64).ravel(), shape, expected)


def root_certificates(ca_file: str | None, cache: dict[str, bytes]) -> bytes | None:
    """The PEM CAs to trust (None: grpc's bundled roots), read once per probe instance."""
    if ca_file is None:
        return None
    if ca_file not in cache:
        cache[ca_file] = Path(ca_file).read_bytes()
    return cache[ca_file]
