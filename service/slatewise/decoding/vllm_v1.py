"""Adapter for vLLM's V1 model runner (the one used on CPU).

The V1 runner hands each request's committed output tokens to a per-request
callable; we keep one automaton per request and let it catch up each step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from vllm.sampling_params import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from slatewise.decoding.automaton import SlateAutomaton, SlateSpec
from slatewise.decoding.masking import constrain_row, handle_tensor


class SlateRequestProcessor:
    """Per-request callable: (output token ids, logits row) -> logits row."""

    def __init__(self, spec: SlateSpec) -> None:
        self.automaton = SlateAutomaton(spec)
        self.handles: torch.Tensor | None = None

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        self.automaton.sync(output_ids)
        if self.handles is None:
            self.handles = handle_tensor(self.automaton, logits.device)
        return constrain_row(self.automaton, logits, self.handles)


class SlateLogitsProcessorV1(AdapterLogitsProcessor):
    """Enabled per request by ``SamplingParams.extra_args['slatewise']``."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        # Fail at admission, in the frontend, not inside the engine loop.
        SlateSpec.from_extra_args(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(
        self, params: SamplingParams
    ) -> Callable[[list[int], torch.Tensor], torch.Tensor] | None:
        spec = SlateSpec.from_extra_args(params.extra_args)
        return SlateRequestProcessor(spec) if spec is not None else None
