"""A small Open Inference Protocol (KServe v2) server on 127.0.0.1, backed by ONNX Runtime.

It serves tiny ONNX models built here (Y = X @ W + B) and can be told to misbehave: a server
or model that is not ready, a slow or failing /infer, an answer from the wrong weights, raw
bytes instead of an answer, a bearer token to demand. The same models and switches are served
over the protocol's gRPC binding too, at `grpc_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import onnx
import onnxruntime
from aiohttp import web
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

from inference_probe.oip_proto import grpc_predict_v2_pb2 as pb2

# Y = X @ W + B for X = [1, 2, 3, 4] is [5.5, 5.0]: the canary's golden output.
WEIGHTS = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]], dtype=np.float32)
BIAS = np.array([0.5, -1.0], dtype=np.float32)
CANARY_INPUT = [1.0, 2.0, 3.0, 4.0]
CANARY_OUTPUT = [5.5, 5.0]
# The same model drifted: the second output is off by 0.31.
DRIFTED_BIAS = np.array([0.5, -0.69], dtype=np.float32)

_DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_DATATYPES = {np.dtype(dtype): name for name, dtype in _DTYPES.items()}


def linear_model(weights: np.ndarray = WEIGHTS, bias: np.ndarray = BIAS) -> bytes:
    """An ONNX model computing Y = MatMul(X, W) + B, X of shape [batch, 4], FP32."""
    rows, columns = weights.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Y"]),
        ],
        "canary",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", columns])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [rows, columns], weights.ravel().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [columns], bias.tolist()),
        ],
    )
    # This onnxruntime refuses IR versions above 13; onnx 1.23 writes 14 unless told.
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


@functools.cache
def _session(weights: bytes, bias: bytes) -> onnxruntime.InferenceSession:
    model = linear_model(
        np.frombuffer(weights, dtype=np.float32).reshape(WEIGHTS.shape),
        np.frombuffer(bias, dtype=np.float32),
    )
    loaded = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    # The first run sets up thread pools (tens of ms); a real server warms up before ready.
    loaded.run(None, {"X": np.zeros((1, WEIGHTS.shape[0]), dtype=np.float32)})
    return loaded


def session(weights: np.ndarray = WEIGHTS, bias: np.ndarray = BIAS) -> onnxruntime.InferenceSession:
    """A CPU session for the linear model; built once per weights for the whole test run."""
    return _session(weights.astype(np.float32).tobytes(), bias.astype(np.float32).tobytes())


@dataclass
class Model:
    """One served model and how it behaves; change the fields between checks."""

    session: onnxruntime.InferenceSession
    versions: frozenset[str] = frozenset({"1"})
    ready: bool = True


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    authorization: str | None
    body: Any = None


class ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class OipServer:
    """`async with OipServer() as server:` then check `server.url`; every field is a switch."""

    models: dict[str, Model] = field(default_factory=lambda: {"canary": Model(session())})
    token: str | None = None  # when set, every request needs `Authorization: Bearer <token>`
    ready: bool = True
    ready_as_json: bool = False  # answer not ready as 200 {"ready": false}, not as HTTP 503
    infer_delay: float = 0.0  # seconds /infer waits before answering
    infer_error: str | None = None  # answer /infer with HTTP 500 {"error": infer_error}
    infer_body: bytes | None = None  # answer /infer with these bytes, status 200
    raw_outputs: bool = True  # over gRPC: outputs as raw bytes (as Triton), else typed contents
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    grpc_url: str = ""  # http://127.0.0.1:port of the gRPC binding
    _runner: web.AppRunner | None = None
    _grpc: grpc.aio.Server | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> OipServer:
        app = web.Application(middlewares=[self._protocol])
        app.router.add_get("/v2/health/ready", self._server_ready)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.router.add_get(f"{prefix}/ready", self._model_ready)
            app.router.add_post(f"{prefix}/infer", self._infer)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._grpc = grpc.aio.server()
        self._grpc.add_generic_rpc_handlers((self._grpc_service(),))
        self.grpc_url = f"http://127.0.0.1:{self._grpc.add_insecure_port('127.0.0.1:0')}"
        await self._grpc.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # a slow /infer still waiting gives up at once
        if self._runner is not None:
            await self._runner.cleanup()
        if self._grpc is not None:
            await self._grpc.stop(None)

    # -- the gRPC binding ----------------------------------------------------------------------
    def _grpc_service(self) -> grpc.GenericRpcHandler:
        calls = {
            "ServerReady": (self._grpc_server_ready, pb2.ServerReadyRequest),
            "ModelReady": (self._grpc_model_ready, pb2.ModelReadyRequest),
            "ModelInfer": (self._grpc_infer, pb2.ModelInferRequest),
        }
        return grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._grpc_call(name, handler),
                    request_deserializer=request.FromString,
                    response_serializer=lambda answer: answer.SerializeToString(),
                )
                for name, (handler, request) in calls.items()
            },
        )

    def _grpc_call(self, name: str, handler: Any) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            authorization = dict(context.invocation_metadata() or ()).get("authorization")
            self.seen.append(Seen("GRPC", name, authorization, request))
            if self.token is not None and authorization != f"Bearer {self.token}":
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
            try:
                return await handler(request)
            except ProtocolError as exc:
                code = {404: grpc.StatusCode.NOT_FOUND, 400: grpc.StatusCode.INVALID_ARGUMENT}
                await context.abort(code.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)

        return call

    async def _grpc_server_ready(self, _request: Any) -> Any:
        return pb2.ServerReadyResponse(ready=self.ready)

    def _grpc_model(self, name: str, version: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(404, f"unknown model {name!r}")
        if version and version not in model.versions:
            raise ProtocolError(404, f"model {name!r} has no version {version!r}")
        return model

    async def _grpc_model_ready(self, request: Any) -> Any:
        return pb2.ModelReadyResponse(ready=self._grpc_model(request.name, request.version).ready)

    async def _grpc_infer(self, request: Any) -> Any:
        model = self._grpc_model(request.model_name, request.model_version)
        if self.infer_delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.infer_delay)
        if self.infer_error is not None:
            raise ProtocolError(500, self.infer_error)
        if not model.ready:
            raise ProtocolError(503, f"model {request.model_name!r} is not ready")
        feeds = {}
        for index, tensor in enumerate(request.inputs):
            dtype = _DTYPES[tensor.datatype]
            if request.raw_input_contents:
                data = np.frombuffer(request.raw_input_contents[index], dtype=dtype)
            else:
                data = np.asarray(_typed(tensor.contents, tensor.datatype), dtype=dtype)
            feeds[tensor.name] = data.reshape(tuple(tensor.shape))
        wanted = [o.name for o in request.outputs] or [o.name for o in model.session.get_outputs()]
        try:
            results = await asyncio.to_thread(model.session.run, wanted, feeds)
        except (InvalidArgument, Fail) as exc:
            raise ProtocolError(400, str(exc)) from None
        answer = pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
        for name, value in zip(wanted, results, strict=True):
            datatype = _DATATYPES[value.dtype]
            output = answer.outputs.add(name=name, datatype=datatype)
            output.shape.extend(value.shape)
            if self.raw_outputs:
                answer.raw_output_contents.append(
                    value.astype(value.dtype.newbyteorder("<")).tobytes()
                )
            else:
                getattr(output.contents, _TYPED[datatype]).extend(value.ravel().tolist())
        return answer

    def paths(self) -> list[str]:
        return [f"{seen.method} {seen.path}" for seen in self.seen]

    @web.middleware
    async def _protocol(self, request: web.Request, handler: Any) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        body = await request.json() if request.can_read_body else None
        self.seen.append(Seen(request.method, request.path, authorization, body))
        if self.token is not None and authorization != f"Bearer {self.token}":
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        try:
            return await handler(request)
        except ProtocolError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)

    async def _server_ready(self, _request: web.Request) -> web.Response:
        return self._readiness(self.ready)

    async def _model_ready(self, request: web.Request) -> web.Response:
        return self._readiness(self._model(request).ready)

    def _readiness(self, ready: bool) -> web.Response:
        if ready or self.ready_as_json:
            return web.json_response({"ready": ready})
        return web.Response(status=503)

    def _model(self, request: web.Request) -> Model:
        name = request.match_info["name"]
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(404, f"unknown model {name!r}")
        version = request.match_info.get("version")
        if version is not None and version not in model.versions:
            raise ProtocolError(404, f"model {name!r} has no version {version!r}")
        return model

    async def _infer(self, request: web.Request) -> web.Response:
        model = self._model(request)
        if self.infer_delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.infer_delay)
        if self.infer_error is not None:
            raise ProtocolError(500, self.infer_error)
        if self.infer_body is not None:
            return web.Response(body=self.infer_body, content_type="application/json")
        if not model.ready:
            raise ProtocolError(503, f"model {request.match_info['name']!r} is not ready")
        feeds = _feeds(self.seen[-1].body, model.session)
        wanted = [o["name"] for o in self.seen[-1].body.get("outputs", [])] or [
            o.name for o in model.session.get_outputs()
        ]
        known = {o.name for o in model.session.get_outputs()}
        if unknown := [name for name in wanted if name not in known]:
            raise ProtocolError(400, f"unexpected inference output {unknown[0]!r}")
        try:
            results = await asyncio.to_thread(model.session.run, wanted, feeds)
        except (InvalidArgument, Fail) as exc:  # a wrong dtype or shape for this model
            raise ProtocolError(400, str(exc)) from None
        outputs = [
            {
                "name": name,
                "datatype": _DATATYPES[value.dtype],
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
            for name, value in zip(wanted, results, strict=True)
        ]
        return web.json_response(
            {"model_name": request.match_info["name"], "model_version": "1", "outputs": outputs}
        )


def _feeds(body: Any, session: onnxruntime.InferenceSession) -> dict[str, np.ndarray]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise ProtocolError(400, "expected a JSON object with an 'inputs' list")
    expected = {i.name for i in session.get_inputs()}
    feeds = {}
    for tensor in body["inputs"]:
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if name not in expected:
            raise ProtocolError(400, f"unexpected inference input {name!r}")
        if datatype not in _DTYPES:
            raise ProtocolError(400, f"input {name!r}: unsupported datatype {datatype!r}")
        data = np.asarray(tensor.get("data"), dtype=_DTYPES[datatype]).ravel()
        if data.size != math.prod(shape):
            raise ProtocolError(400, f"input {name!r}: {data.size} values for shape {shape}")
        feeds[name] = data.reshape(shape)
    if missing := expected - feeds.keys():
        raise ProtocolError(400, f"expected inference input {sorted(missing)[0]!r}")
    return feeds


# Each datatype's field of InferTensorContents (the gRPC binding's typed data).
_TYPED = {
    "BOOL": "bool_contents",
    **{f"INT{bits}": "int_contents" for bits in (8, 16, 32)},
    "INT64": "int64_contents",
    **{f"UINT{bits}": "uint_contents" for bits in (8, 16, 32)},
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _typed(contents: Any, datatype: str) -> list[Any]:
    if datatype not in _TYPED:
        raise ProtocolError(400, f"{datatype} has no typed contents; send raw bytes")
    return list(getattr(contents, _TYPED[datatype]))
