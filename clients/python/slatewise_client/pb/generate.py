"""Regenerate the stubs in this folder from ../../../../proto (needs grpcio-tools).

The generated modules are committed so that the client installs from source
without grpcio-tools; tests/test_proto_stubs.py fails when they drift from the
.proto. protoc writes absolute imports (``from slatewise.v1 import ...``) that
would collide with the server package, so they are rewritten to relative ones.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[3] / "proto"
PROTO_FILES = ["slatewise/v1/slate.proto"]


def generate(out_dir: Path = HERE) -> list[Path]:
    from grpc_tools import protoc  # dev-only dependency

    written = []
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        for src in sorted(Path(tmp).rglob("*_pb2*.py*")):
            text = src.read_text()
            text = re.sub(r"^from slatewise\.v1 import (\w+)", r"from . import \1", text, flags=re.M)
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)
