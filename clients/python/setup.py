"""Builds snow_fox_client, generating its message classes from snow-fox's
proto/ (two directories up, or $SNOW_FOX_PROTO) with grpcio-tools' protoc."""

import os
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTO = pathlib.Path(os.environ.get("SNOW_FOX_PROTO", HERE.parent.parent / "proto"))


def generate(out_dir):
    """Writes public_api_pb2.py for proto/public_api.proto into out_dir."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    source = PROTO / "public_api.proto"
    if not source.exists():
        raise SystemExit(f"snow-fox's {source} is missing: set SNOW_FOX_PROTO to its proto/ directory")
    code = protoc.main(["protoc", f"-I{PROTO}", f"--python_out={out_dir}", str(source)])
    if code != 0:
        raise SystemExit(f"protoc failed on {source} (exit {code})")


class BuildWithMessages(build_py):
    """build_py that first generates the message classes into the build."""

    def run(self):
        super().run()
        generate(pathlib.Path(self.build_lib) / "snow_fox_client")


setup(cmdclass={"build_py": BuildWithMessages})
