"""Bad input as INVALID_ARGUMENT with google.rpc.BadRequest field violations."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class InvalidRequest(Exception):
    """Collects every problem with a request, so callers can fix them at once."""

    def __init__(self, violations: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))
        self.violations = violations


def bad_request_status(violations: list[tuple[str, str]], prefix: str = "") -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
    )
    first = f"{violations[0][0]}: {violations[0][1]}" if violations else "invalid request"
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=prefix + first + more, details=[detail])
    )


async def abort_invalid(context: grpc.aio.ServicerContext, error: InvalidRequest) -> None:
    await context.abort_with_status(bad_request_status(error.violations))
