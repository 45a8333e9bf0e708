"""Generated protobuf and gRPC modules: the only copy in the repository."""

from . import slate_pb2, slate_pb2_grpc

__all__ = ["slate_pb2", "slate_pb2_grpc"]
