"""slatewise.v1.ModelService: hot-swap, rollback and status of the served model."""

from __future__ import annotations

import grpc

from slatewise.model.swap import ModelState, ModelSwitcher, SwapFailed, SwapRefused
from slatewise.proto import pb, pb_grpc


def status(state: ModelState) -> pb.ModelStatus:
    return pb.ModelStatus(model_id=state.model_id, path=state.path, previous_model_id=state.previous_model_id,
                          previous_path=state.previous_path, last_load_seconds=state.last_load_seconds,
                          switches=state.switches,
                          shadow=pb.ShadowComparison(**state.shadow.__dict__))


class ModelService(pb_grpc.ModelServiceServicer):
    def __init__(self, switcher: ModelSwitcher | None) -> None:
        self.switcher = switcher

    async def _switcher(self, context) -> ModelSwitcher:
        if self.switcher is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the server has no model path (--model)")
        return self.switcher

    async def _run(self, context, action):
        try:
            return status(await action)
        except SwapRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except SwapFailed as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"not switched: {exc}")

    async def LoadModel(self, request, context):
        switcher = await self._switcher(context)
        return await self._run(context, switcher.load(request.path, min(request.shadow_requests, 256)))

    async def RollbackModel(self, request, context):
        switcher = await self._switcher(context)
        return await self._run(context, switcher.rollback())

    async def GetModelStatus(self, request, context):
        switcher = await self._switcher(context)
        return status(switcher.status())
