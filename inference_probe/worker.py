"""The canary's worker process: it alone imports onnxruntime, holds the session and talks to
the GPU. The daemon sends it small requests over a pipe and can kill it at any time."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from inference_probe.gpu import read_gpus

# Requests: {"op": "load"} and {"op": "check"}; replies are dicts (an "error" key on failure).


def serve_fd(fd: int) -> None:
    """The worker process's entry point: its spec first, then requests, on the socket `fd`."""
    conn = Connection(fd)
    try:
        spec = conn.recv()
    except (EOFError, OSError):
        return
    main(conn, spec)


def main(conn: Connection, spec: dict[str, Any]) -> None:
    """Serve requests until the pipe closes (the daemon stopped or let go of this worker)."""
    canary = _Canary(spec)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = canary.handle(request)
        except Exception as exc:  # reported as a failed check, never a dead worker
            reply = {"error": f"{type(exc).__name__}: {exc}", "error_class": "internal"}
        reply["pid"] = os.getpid()
        conn.send(reply)


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """onnxruntime prints a failed CUDA load to fd 1 and fd 2 (preload_dlls prints, the C++
    logger writes); keep that out of the daemon's output and hand the text back instead."""
    lines: list[str] = []
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
        try:
            yield lines
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def _cuda_reason(lines: list[str]) -> str | None:
    """The most telling line of onnxruntime's complaint about CUDA, shortened."""
    for line in lines:
        if "with error: " in line:
            return line.split("with error: ", 1)[1].strip()[:300]
    for line in lines:
        if "cannot open shared object file" in line or "CUDA failure" in line:
            return line.split(" : ")[-1].strip()[:300]
    return lines[-1].strip()[:300] if lines else None


class _Canary:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.session: Any = None
        self.inputs: dict[str, np.ndarray] = {}
        self.golden: dict[str, np.ndarray] = {}
        self.load_time: float | None = None
        self.load_reported = False
        self.cuda_reason: str | None = None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "load":
            return self.load()
        if op == "check":
            if self.session is None:
                loaded = self.load()
                if "error" in loaded:
                    return loaded
            return self.check()
        return {"error": f"unknown request {op!r}", "error_class": "internal"}

    def load(self) -> dict[str, Any]:
        if self.session is not None:
            return {"load_s": self.load_time, "providers": self.session.get_providers()}
        try:
            golden = np.load(self.spec["golden"], allow_pickle=False)
            self.inputs = {k[6:]: golden[k] for k in golden.files if k.startswith("input:")}
            self.golden = {k[7:]: golden[k] for k in golden.files if k.startswith("output:")}
        except Exception as exc:  # a truncated or corrupted golden file
            reason = (
                "not an .npz archive of arrays"
                if isinstance(exc, ValueError) and "pickle" in str(exc)
                else str(exc)
            )
            return {
                "error": f"cannot read golden file {self.spec['golden']}: {reason}",
                "error_class": "wrong_output",
            }
        if not self.inputs or not self.golden:
            return {
                "error": f"golden file {self.spec['golden']} has no input:/output: arrays",
                "error_class": "wrong_output",
            }
        started = time.perf_counter()
        with _captured_output() as noise:
            import onnxruntime as ort

            ort.set_default_logger_severity(3)
            wanted = list(self.spec["providers"])
            if "CUDAExecutionProvider" in wanted and hasattr(ort, "preload_dlls"):
                with contextlib.suppress(Exception):
                    ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when present
            providers: list[Any] = []
            for name in wanted:
                if name == "CUDAExecutionProvider":
                    options = {"device_id": str(self.spec["device"]), "use_tf32": "0"}
                    providers.append((name, options))
                else:
                    providers.append(name)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # On the GPU the CPU threads only feed it; on a CPU fallback the canary must not
            # take every core from the host it watches.
            options.intra_op_num_threads = int(self.spec["threads"])
            options.inter_op_num_threads = 1
            try:
                session = ort.InferenceSession(
                    self.spec["model"], sess_options=options, providers=providers
                )
            except Exception as exc:
                return {"error": f"cannot load model {self.spec['model']}: {exc}"[:500]}
        self.load_time = time.perf_counter() - started
        self.session = session
        used = session.get_providers()
        if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in used:
            self.cuda_reason = _cuda_reason(noise) or "CUDA provider not available"
        missing = sorted(set(self.golden) - {o.name for o in session.get_outputs()})
        if missing:
            self.session = None
            return {
                "error": f"the model has no output {missing[0]!r} that the golden file holds",
                "error_class": "wrong_output",
            }
        return {"load_s": self.load_time, "providers": used}

    def check(self) -> dict[str, Any]:
        session = self.session
        names = list(self.golden)
        started = time.perf_counter()
        outputs = dict(zip(names, session.run(names, self.inputs), strict=True))
        latency = time.perf_counter() - started
        atol, rtol = self.spec["atol"], self.spec["rtol"]
        max_abs = max_rel = 0.0
        mismatch = None
        for name, expected in self.golden.items():
            actual = np.asarray(outputs[name])
            if actual.shape != expected.shape:
                mismatch = (
                    f"output {name!r} has shape {list(actual.shape)}, golden {list(expected.shape)}"
                )
                max_abs = max_rel = float("inf")
                break
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
            finite = bool(np.isfinite(actual).all())
            worst_abs = float(diff.max()) if finite else float("inf")
            scale = np.maximum(np.abs(expected.astype(np.float64)), 1e-12)
            worst_rel = float((diff / scale).max()) if finite else float("inf")
            max_abs, max_rel = max(max_abs, worst_abs), max(max_rel, worst_rel)
            if mismatch is None and not (
                finite and np.allclose(actual, expected, atol=atol, rtol=rtol)
            ):
                mismatch = (
                    f"output {name!r} differs from the golden output: max abs error "
                    f"{worst_abs:.3g} (atol {atol:g}, rtol {rtol:g})"
                )
        throughput = None
        burst = int(self.spec["burst"])
        if burst and mismatch is None:
            # At most `burst` runs and at most a third of the check's timeout, so a long burst
            # is never mistaken for a hang.
            began = time.perf_counter()
            stop_at = began + float(self.spec["burst_seconds"])
            runs = 0
            while runs < burst and (runs == 0 or time.perf_counter() < stop_at):
                session.run(names, self.inputs)
                runs += 1
            throughput = runs / (time.perf_counter() - began)
        reply: dict[str, Any] = {
            "latency": latency,
            "throughput": throughput,
            "max_abs": max_abs,
            "max_rel": max_rel,
            "mismatch": mismatch,
            "providers": session.get_providers(),
            "cuda_reason": self.cuda_reason,
            "gpu": read_gpus(),
        }
        if not self.load_reported:
            reply["load_s"] = self.load_time
            self.load_reported = True
        return reply
