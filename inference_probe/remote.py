"""Remote inference canary over the Open Inference Protocol (KServe v2, Triton), over HTTP
or (`protocol: grpc`) its gRPC binding (inference_probe.oip_grpc).

One check asks the server and the model whether they are ready, sends one known request to
`/infer` (ModelInfer) and compares the outputs with golden values within a tolerance.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import NETWORK_ERRORS, Probe
from healthcheck.probes.grpc_health import NOT_READY, RPC_STATUS
from healthcheck.probes.http_client import (
    BodyTooLarge,
    classify_client_error,
    client_session,
    read_capped,
    tls_context,
)
from healthcheck.probes.tls import TlsContexts
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import FieldError, Option, TlsOptions
from healthcheck.secrets import reveal
from healthcheck.targets import Endpoint
from inference_probe.canary_plugin import CANARY_DOWN, CANARY_METRICS, CANARY_RULE, WRONG_OUTPUT
from inference_probe.oip import (
    InferenceSettings,
    InvalidResponse,
    Tolerance,
    compare,
    infer_request,
    list_of,
    output_values,
    read_expected,
    read_headers,
    read_input,
    read_name,
    read_tolerance,
    read_version,
    readiness_problem,
    server_error,
)

MAX_BODY = 16 * 1024 * 1024  # an infer answer bigger than this is not a canary's


class InferenceProbe(Probe):
    kind = "inference"
    settings = InferenceSettings
    options = {
        "url": Option(schema.http_url, help="base URL of the inference server (no /v2)"),
        "model_name": Option(read_name, help="the model to ask for readiness and run"),
        "model_version": Option(
            schema.optional(read_version), None, "a model version; default: any"
        ),
        "headers": Option(read_headers, (), "request headers, e.g. Authorization"),
        "tls": Option(schema.tls_options, TlsOptions(), "certificate checks, as for http"),
        "inputs": Option(
            list_of(read_input, "input"), help="the canary request: name, datatype, shape, data"
        ),
        "expected": Option(
            list_of(read_expected, "output"), help="golden outputs: name, data, shape"
        ),
        "tolerance": Option(read_tolerance, Tolerance(), "atol and rtol, as numpy.allclose"),
        "protocol": Option(
            schema.choice("http", "grpc"), "http", "http, or grpc: the protocol's gRPC binding"
        ),
    }
    placeholders = frozenset({"STATUS", "BODY", "RESPONSE_TIME", "CONNECTED"})
    errors = (
        *NETWORK_ERRORS,
        ErrorClass.HTTP_STATUS,
        ErrorClass.BODY_TOO_LARGE,
        ErrorClass.INVALID_RESPONSE,
        NOT_READY,
        WRONG_OUTPUT,
        RPC_STATUS,
        ErrorClass.CONDITION_FAILED,
    )
    metrics = CANARY_METRICS
    alert_rules = (CANARY_RULE,)
    down_alertname = CANARY_DOWN
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def resolve(cls, settings: Any, base_dir: Path) -> Any:
        oip = settings.narrow(InferenceSettings)
        if oip.protocol == "grpc" and oip.url.startswith("https:") and not oip.tls.verify:
            raise FieldError(
                "tls.verify",
                "over grpc the server's certificate is always verified (grpcio cannot skip "
                "it); trust a private CA with tls.ca_file instead",
            )
        return settings

    async def start(self) -> None:
        # Comparing outputs needs numpy (~0.15 s to import): here, off the event loop, rather
        # than in the first check's answer; and never for a configuration without this kind.
        await asyncio.to_thread(importlib.import_module, "numpy")
        self._tls = TlsContexts()
        self._roots: dict[str, bytes] = {}
        self._client()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Connections live across the three requests of one check, not between checks at
            # the default 30s interval, so a server's idle close never races a check.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=5.0)
            self._session = client_session(connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def failed(
        self,
        target: Endpoint,
        error: ErrorClass,
        text: str,
        started: float,
        timestamp: float | None = None,
        **fields: Any,
    ) -> ProbeResult:
        """Every failure names the model, the base class's timeouts and network errors too."""
        fields.setdefault("details", _details(target.settings.narrow(InferenceSettings)))
        return super().failed(target, error, text, started, timestamp, **fields)

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(InferenceSettings)
        started = time.perf_counter()
        timestamp = self.clock()
        if settings.protocol == "grpc":
            return await self._attempt_grpc(target, settings, started, timestamp)
        tls = tls_context(self._tls, settings.tls)
        if isinstance(tls, str):
            return self.failed(target, ErrorClass.TLS, tls, started, timestamp)

        try:
            for what, path in (
                ("server", "/v2/health/ready"),
                (settings.model_label, f"{settings.model_path}/ready"),
            ):
                status, body = await self._exchange(settings, tls, path)
                problem = readiness_problem(status, body, what, path)
                if problem:
                    error, text = problem
                    return self.failed(target, error, text, started, timestamp, http_status=status)
            infer_path = f"{settings.model_path}/infer"
            infer_started = time.perf_counter()
            status, body = await self._exchange(settings, tls, infer_path, infer_request(settings))
            infer_ms = (time.perf_counter() - infer_started) * 1000
        except aiohttp.ClientError as exc:
            error, message = classify_client_error(exc)
            return self.failed(target, error, message, started, timestamp)
        except BodyTooLarge:
            text = f"answer is over the {MAX_BODY}-byte cap"
            return self.failed(target, ErrorClass.BODY_TOO_LARGE, text, started, timestamp)

        if not 200 <= status < 300:
            text = f"HTTP {status} from POST {infer_path}{server_error(body)}"
            details = _details(settings, infer_ms)
            return self.failed(
                target,
                ErrorClass.HTTP_STATUS,
                text,
                started,
                timestamp,
                http_status=status,
                details=details,
            )
        return self._judge_answer(
            target,
            settings,
            lambda expected: output_values(body, expected),
            body,
            status,
            (started, timestamp, infer_ms),
        )

    async def _attempt_grpc(
        self, target: Endpoint, settings: InferenceSettings, started: float, timestamp: float
    ) -> ProbeResult:
        """The same check over the gRPC binding: ServerReady, ModelReady, ModelInfer."""
        from inference_probe import oip_grpc  # grpcio only for a configuration that uses it

        try:
            roots = oip_grpc.root_certificates(settings.tls.ca_file, self._roots)
        except OSError as exc:
            text = f"cannot load ca_file {settings.tls.ca_file!r}: {exc.strerror or exc}"
            return self.failed(target, ErrorClass.TLS, text, started, timestamp)
        try:
            async with oip_grpc.OipChannel(settings, roots) as channel:
                problem = await channel.not_ready()
                if problem:
                    return self.failed(target, *problem, started, timestamp)
                infer_started = time.perf_counter()
                response = await channel.infer()
                infer_ms = (time.perf_counter() - infer_started) * 1000
                body = channel.as_json(response)
        except oip_grpc.RpcFailure as exc:
            return self.failed(target, exc.error, exc.text, started, timestamp)
        return self._judge_answer(
            target,
            settings,
            lambda expected: oip_grpc.output_values(response, expected),
            body,
            None,
            (started, timestamp, infer_ms),
        )

    def _judge_answer(
        self,
        target: Endpoint,
        settings: InferenceSettings,
        values: Any,
        body: bytes,
        status: int | None,
        times: tuple[float, float, float],
    ) -> ProbeResult:
        """Compare each expected output (`values(expected)` reads it from the answer) within
        the tolerance, then judge the conditions."""
        started, timestamp, infer_ms = times

        def failure(error: ErrorClass, text: str, *errors: float | None) -> ProbeResult:
            details = _details(settings, infer_ms, errors or None)
            return self.failed(
                target, error, text, started, timestamp, http_status=status, details=details
            )

        try:
            actual = [values(expected) for expected in settings.expected]
        except InvalidResponse as exc:
            return failure(ErrorClass.INVALID_RESPONSE, str(exc))
        comparisons = [
            compare(values, expected, settings.tolerance)
            for values, expected in zip(actual, settings.expected, strict=True)
        ]
        worst_abs = _worst(c.max_abs_error for c in comparisons)
        worst_rel = _worst(c.max_rel_error for c in comparisons)
        wrong = next((c for c in comparisons if not c.passed), None)
        if wrong is not None:
            text = wrong.describe(settings.tolerance)
            return failure(WRONG_OUTPUT, text, worst_abs, worst_rel)
        context = ConditionContext(status=status, body=body, connected=True)
        details = _details(settings, infer_ms, (worst_abs, worst_rel))
        return self.judged(target, context, started, timestamp, http_status=status, details=details)

    async def _exchange(
        self,
        settings: InferenceSettings,
        tls: ssl.SSLContext,
        path: str,
        payload: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """GET (no payload) or POST JSON to one protocol path: the status and the capped body."""
        async with self._client().request(
            "GET" if payload is None else "POST",
            settings.url.rstrip("/") + path,
            headers={name: reveal(value) for name, value in settings.headers},
            json=payload,
            allow_redirects=False,
            ssl=tls,
            server_hostname=settings.tls.server_name,
        ) as response:
            return response.status, await read_capped(response, MAX_BODY)


def _worst(errors: Any) -> float | None:
    """The largest error; None as soon as one output has values that are not finite."""
    values = list(errors)
    return None if any(v is None for v in values) else max(values)


def _details(
    settings: InferenceSettings,
    infer_ms: float | None = None,
    errors: tuple[float | None, ...] | None = None,
) -> tuple[tuple[str, str | float | None], ...]:
    """What a user graphs: the model, the infer time, how far the outputs were (once compared)."""
    details: list[tuple[str, str | float | None]] = [("model", settings.model_name)]
    if settings.model_version is not None:
        details.append(("model_version", settings.model_version))
    if infer_ms is not None:
        details.append(("inference_ms", round(infer_ms, 3)))
    if errors is not None:
        max_abs_error, max_rel_error = errors
        details += [("max_abs_error", max_abs_error), ("max_rel_error", max_rel_error)]
    return tuple(details)
