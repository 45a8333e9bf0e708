"""The generated stubs, imported from the client package (their only home)."""

from slatewise_client.pb import slate_pb2 as pb
from slatewise_client.pb import slate_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
