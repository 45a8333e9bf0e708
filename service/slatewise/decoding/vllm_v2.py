"""Adapter for vLLM's Model Runner V2 (the default on GPUs).

V2 keys state by a recycled request slot and shows committed tokens as a
device tensor; we keep one automaton per slot and feed it the tokens it has
not seen yet, read from ``all_token_ids`` between ``prompt_len`` and
``total_len``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

from slatewise.decoding.automaton import SlateAutomaton, SlateSpec

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import (
        LogitsContext,
        LogitsProcRequestState,
    )


class SlateLogitsProcessorV2(LogitsProcessor):
    def __init__(self, vllm_config: VllmConfig, req_states: LogitsProcRequestState):
        self.req_states = req_states
        self.slots: dict[int, SlateAutomaton] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        SlateSpec.from_extra_args(sampling_params.extra_args)

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        spec = SlateSpec.from_extra_args(sampling_params.extra_args)
        # Slots are recycled: always overwrite what a previous occupant left.
        if spec is None:
            self.slots.pop(req_idx, None)
            return False
        self.slots[req_idx] = SlateAutomaton(spec)
        return True

    def _committed_outputs(self, slot: int) -> list[int]:
        rs = self.req_states
        start = int(rs.prompt_len.np[slot])
        end = int(rs.total_len.gpu[slot].item())
        return rs.all_token_ids.gpu[slot, start:end].tolist()

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        from slatewise.decoding.masking import constrain_row

        if not self.slots:
            return logits
        rows = ctx.expanded_idx_mapping.tolist()
        for row, slot in enumerate(rows):
            automaton = self.slots.get(slot)
            if automaton is None:
                continue
            automaton.sync(self._committed_outputs(slot))
            logits[row] = constrain_row(automaton, logits[row])
        return logits
