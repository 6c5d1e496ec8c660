"""Build the shipped canary models and their golden outputs (run once; the results are committed).

    python -m inference_probe.build_models --out inference_probe/models   # the builtin ones
    python -m inference_probe.build_models --gemm-size 8192 --batch 256 \
        --out /etc/healthcheck/canary

Needs the `onnx` package (the `build` extra). Everything is fixed by a seed, so a rebuild gives
the same files. The golden outputs are computed here with onnxruntime on the CPU and saved beside
each model as `<model>.golden.npz` (inputs `input:<name>`, outputs `output:<name>`): a check runs
the same inputs on the GPU and compares.

- gemm: a GEMM-heavy stack (batch x N times N x N, `layers` times, tanh between, then a projection
  to 16 outputs). Its weights are computed inside the graph from a sine pattern, so the file stays
  a few KB whatever N is; onnxruntime folds them into constants when the session loads.
- conv: a small conv net (two 3x3 convolutions, ReLU, global pooling, a dense layer) on a
  3 x 32 x 32 image, weights drawn from the seed and stored in the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20261123
OPSET = 17
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 would write 14 by default
MODELS = Path(__file__).with_name("models")


def gemm_model(size: int, layers: int, outputs: int = 16) -> Any:  # an onnx.ModelProto
    from onnx import TensorProto, helper

    nodes = []
    inits = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, value.shape, value.ravel()))
        return name

    def weights(tag: str, rows: int, cols: int, phase: float) -> str:
        """rows x cols weights sin(((i * i) mod 10007) * a + phase) / sqrt(rows) for the flat
        index i, computed in the graph in exact integer arithmetic, then as floats."""
        count = rows * cols

        def int64(name: str, value: int) -> str:
            inits.append(helper.make_tensor(name, TensorProto.INT64, [], [value]))
            return name

        nodes.append(
            helper.make_node(
                "Range",
                [int64(f"{tag}_start", 0), int64(f"{tag}_limit", count), int64(f"{tag}_one", 1)],
                [f"{tag}_i"],
            )
        )
        nodes.append(helper.make_node("Mul", [f"{tag}_i", f"{tag}_i"], [f"{tag}_ii"]))
        nodes.append(helper.make_node("Mod", [f"{tag}_ii", int64(f"{tag}_p", 10007)], [f"{tag}_m"]))
        nodes.append(helper.make_node("Cast", [f"{tag}_m"], [f"{tag}_mf"], to=TensorProto.FLOAT))
        nodes.append(
            helper.make_node(
                "Mul",
                [f"{tag}_mf", const(f"{tag}_a", np.array(0.618034, np.float32))],
                [f"{tag}_x"],
            )
        )
        nodes.append(
            helper.make_node(
                "Add", [f"{tag}_x", const(f"{tag}_b", np.array(phase, np.float32))], [f"{tag}_y"]
            )
        )
        nodes.append(helper.make_node("Sin", [f"{tag}_y"], [f"{tag}_s"]))
        scale = np.array(1.7 / np.sqrt(rows), np.float32)
        nodes.append(helper.make_node("Mul", [f"{tag}_s", const(f"{tag}_k", scale)], [f"{tag}_f"]))
        nodes.append(
            helper.make_node(
                "Reshape", [f"{tag}_f", const_i64(f"{tag}_shape", [rows, cols])], [tag]
            )
        )
        return tag

    def const_i64(name: str, value: list[int]) -> str:
        inits.append(helper.make_tensor(name, TensorProto.INT64, [len(value)], value))
        return name

    current = "X"
    for layer in range(layers):
        w = weights(f"W{layer}", size, size, phase=0.1 + layer)
        nodes.append(helper.make_node("MatMul", [current, w], [f"h{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"h{layer}"], [f"a{layer}"]))
        current = f"a{layer}"
    projection = weights("P", size, outputs, phase=0.5)
    nodes.append(helper.make_node("MatMul", [current, projection], ["Y"]))
    graph = helper.make_graph(
        nodes,
        "healthcheck_gemm_canary",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", outputs])],
        inits,
    )
    return _model(graph, f"gemm N={size} layers={layers}")


def conv_model(rng: np.random.Generator) -> Any:  # an onnx.ModelProto
    from onnx import TensorProto, helper, numpy_helper

    def init(name: str, shape: tuple[int, ...], fan_in: int) -> TensorProto:
        value = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return numpy_helper.from_array(value, name)

    inits = [
        init("c1_w", (8, 3, 3, 3), 27),
        init("c1_b", (8,), 27),
        init("c2_w", (16, 8, 3, 3), 72),
        init("c2_b", (16,), 72),
        init("fc_w", (16, 10), 16),
        init("fc_b", (10,), 16),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Conv", ["X", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2_w", "c2_b"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Reshape", ["g", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "fc_w"], ["m"]),
        helper.make_node("Add", ["m", "fc_b"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "healthcheck_conv_canary",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return _model(graph, "conv 3x32x32 -> 10")


def _model(graph: Any, doc: str) -> Any:  # an onnx.ModelProto
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="healthcheck",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write(model: Any, inputs: dict[str, np.ndarray], path: Path) -> dict[str, float]:
    """Save the model, run it on the CPU, save inputs and outputs as the golden file."""
    import onnx
    import onnxruntime as ort

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, inputs), strict=True))
    arrays = {f"input:{k}": v for k, v in inputs.items()}
    arrays |= {f"output:{k}": v for k, v in outputs.items()}
    golden = path.with_suffix(".golden.npz")
    # numpy's stubs match **arrays against savez_compressed's bool allow_pickle too.
    np.savez_compressed(golden, **arrays)  # type: ignore[arg-type]
    return {name: float(np.abs(value).max()) for name, value in outputs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help=f"directory (the shipped ones: {MODELS})"
    )
    parser.add_argument("--gemm-size", type=int, default=1024, help="N of the N x N weights")
    parser.add_argument("--gemm-layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32, help="rows of the gemm canary input")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401
    except ImportError:
        parser.exit(3, "build_models needs the onnx package: pip install 'healthcheck[build]'\n")
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.0, 1.0, (args.batch, args.gemm_size)).astype(np.float32)
    summary = {
        "gemm": write(
            gemm_model(args.gemm_size, args.gemm_layers), {"X": x}, args.out / "gemm.onnx"
        ),
        "conv": write(
            conv_model(rng),
            {"X": rng.uniform(0.0, 1.0, (1, 3, 32, 32)).astype(np.float32)},
            args.out / "conv.onnx",
        ),
    }
    print(json.dumps({"out": str(args.out), "max_abs_output": summary}))


if __name__ == "__main__":
    main()
