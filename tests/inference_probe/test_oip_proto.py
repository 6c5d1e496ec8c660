"""The committed OIP gRPC messages are what their .proto generates, so neither drifts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO = "inference_probe/oip_proto/grpc_predict_v2.proto"


def test_the_committed_module_is_what_the_proto_generates(tmp_path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    (tmp_path / PROTO).parent.mkdir(parents=True)
    shutil.copy(REPO / PROTO, tmp_path / PROTO)

    code = protoc.main(
        ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", str(tmp_path / PROTO)]
    )

    assert code == 0
    generated = (tmp_path / PROTO).with_name("grpc_predict_v2_pb2.py").read_text()
    committed = (REPO / PROTO).with_name("grpc_predict_v2_pb2.py").read_text()
    assert generated == committed, "regenerate: see inference_probe/oip_proto/README.md"
