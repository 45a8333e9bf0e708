"""Client of the Slatewise slate service."""

from slatewise_client.client import AsyncSlateClient, SlateClient
from slatewise_client.errors import field_violations
from slatewise_client.pb import slate_pb2, slate_pb2_grpc
from slatewise_client.requests import build_event, build_request

__all__ = [
    "AsyncSlateClient",
    "SlateClient",
    "build_event",
    "build_request",
    "field_violations",
    "slate_pb2",
    "slate_pb2_grpc",
]
__version__ = "0.1.0"
