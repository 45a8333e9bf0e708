"""Sync and asyncio clients: thin wrappers that keep callers off raw stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from slatewise_client.pb import slate_pb2 as pb
from slatewise_client.pb import slate_pb2_grpc as pb_grpc
from slatewise_client.requests import build_request

# Round-robin matters for `dns:///` targets that resolve to every pod of a
# headless Service: the default pick_first would pin all calls to one pod.
DEFAULT_OPTIONS: Sequence[tuple[str, object]] = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
)


def tls_credentials(ca: str | None = None, cert: str | None = None,
                    key: str | None = None) -> grpc.ChannelCredentials | None:
    """Channel credentials from PEM file paths (None when no TLS is asked for)."""
    if not (ca or cert or key):
        return None

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca) if ca else None,
        private_key=read(key) if key else None,
        certificate_chain=read(cert) if cert else None,
    )


def _credentials_metadata(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def _connect(client, api, target, credentials, token, options) -> None:
    """Channel and stubs, for grpc (sync) or grpc.aio alike."""
    client.channel = (api.secure_channel(target, credentials, options=options) if credentials
                      else api.insecure_channel(target, options=options))
    client._metadata = _credentials_metadata(token)
    client.slates = pb_grpc.SlateServiceStub(client.channel)
    client.catalogue = pb_grpc.CatalogueServiceStub(client.channel)
    client.feedback = pb_grpc.FeedbackServiceStub(client.channel)
    client.models = pb_grpc.ModelServiceStub(client.channel)
    client.health_stub = health_pb2_grpc.HealthStub(client.channel)


class SlateClient:
    """Blocking client. Use as a context manager or call close()."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None,
                 token: str | None = None,
                 options: Sequence[tuple[str, object]] = DEFAULT_OPTIONS) -> None:
        _connect(self, grpc, target, credentials, token, options)

    def recommend(self, query: str = "", k: int = 10, *, deadline: float | None = None,
                  request: pb.RecommendRequest | None = None, **kwargs) -> pb.Slate:
        req = request if request is not None else build_request(query, k, **kwargs)
        return self.slates.Recommend(req, timeout=deadline, metadata=self._metadata)

    def recommend_stream(self, query: str = "", k: int = 10, *, deadline: float | None = None,
                         request: pb.RecommendRequest | None = None, **kwargs) -> Iterator[pb.SlateEvent]:
        req = request if request is not None else build_request(query, k, **kwargs)
        yield from self.slates.RecommendStream(req, timeout=deadline, metadata=self._metadata)

    def catalogue_info(self, deadline: float | None = None) -> pb.CatalogueInfo:
        return self.catalogue.GetCatalogueInfo(
            pb.GetCatalogueInfoRequest(), timeout=deadline, metadata=self._metadata
        )

    def report_events(self, events: Sequence[pb.FeedbackEvent],
                      deadline: float | None = None) -> pb.ReportEventsResponse:
        """Durable once it returns; INVALID_ARGUMENT names bad events, the good ones are kept."""
        return self.feedback.ReportEvents(pb.ReportEventsRequest(events=list(events)),
                                          timeout=deadline, metadata=self._metadata)

    def load_model(self, path: str, deadline: float | None = None, shadow_requests: int = 0) -> pb.ModelStatus:
        return self.models.LoadModel(pb.LoadModelRequest(path=path, shadow_requests=shadow_requests),
                                     timeout=deadline, metadata=self._metadata)

    def rollback_model(self, deadline: float | None = None) -> pb.ModelStatus:
        return self.models.RollbackModel(pb.RollbackModelRequest(), timeout=deadline, metadata=self._metadata)

    def model_status(self, deadline: float | None = None) -> pb.ModelStatus:
        return self.models.GetModelStatus(pb.GetModelStatusRequest(), timeout=deadline,
                                          metadata=self._metadata)

    def health(self, service: str = "", deadline: float | None = 5.0) -> str:
        resp = self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SlateClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncSlateClient:
    """asyncio client on grpc.aio. Use as an async context manager."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None,
                 token: str | None = None,
                 options: Sequence[tuple[str, object]] = DEFAULT_OPTIONS) -> None:
        _connect(self, grpc.aio, target, credentials, token, options)

    async def recommend(self, query: str = "", k: int = 10, *, deadline: float | None = None,
                        request: pb.RecommendRequest | None = None, **kwargs) -> pb.Slate:
        req = request if request is not None else build_request(query, k, **kwargs)
        return await self.slates.Recommend(req, timeout=deadline, metadata=self._metadata)

    async def recommend_stream(self, query: str = "", k: int = 10, *, deadline: float | None = None,
                               request: pb.RecommendRequest | None = None,
                               **kwargs) -> AsyncIterator[pb.SlateEvent]:
        req = request if request is not None else build_request(query, k, **kwargs)
        call = self.slates.RecommendStream(req, timeout=deadline, metadata=self._metadata)
        async for event in call:
            yield event

    async def catalogue_info(self, deadline: float | None = None) -> pb.CatalogueInfo:
        return await self.catalogue.GetCatalogueInfo(
            pb.GetCatalogueInfoRequest(), timeout=deadline, metadata=self._metadata
        )

    async def report_events(self, events: Sequence[pb.FeedbackEvent],
                            deadline: float | None = None) -> pb.ReportEventsResponse:
        return await self.feedback.ReportEvents(pb.ReportEventsRequest(events=list(events)),
                                                timeout=deadline, metadata=self._metadata)

    async def load_model(self, path: str, deadline: float | None = None,
                         shadow_requests: int = 0) -> pb.ModelStatus:
        return await self.models.LoadModel(pb.LoadModelRequest(path=path, shadow_requests=shadow_requests),
                                           timeout=deadline, metadata=self._metadata)

    async def rollback_model(self, deadline: float | None = None) -> pb.ModelStatus:
        return await self.models.RollbackModel(pb.RollbackModelRequest(), timeout=deadline,
                                               metadata=self._metadata)

    async def model_status(self, deadline: float | None = None) -> pb.ModelStatus:
        return await self.models.GetModelStatus(pb.GetModelStatusRequest(), timeout=deadline,
                                                metadata=self._metadata)

    async def health(self, service: str = "", deadline: float | None = 5.0) -> str:
        resp = await self.health_stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncSlateClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
