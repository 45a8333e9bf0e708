"""Model Runner V2 adapter, driven with the runner's real dataclasses.

V2 needs Triton and a GPU, which these machines lack, so the runner's buffers
are stood in by CPU tensors of the same shape and meaning; the vLLM types
(LogitsContext, LogitsProcRequestState, SamplingParams) are the real ones.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from vllm.sampling_params import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

from slatewise.decoding.automaton import SlateSpec
from slatewise.decoding.vllm_v2 import SlateLogitsProcessorV2

VOCAB, EOS = 64, 2


def _state(max_reqs=4, max_len=32):
    return LogitsProcRequestState(
        device=torch.device("cpu"), max_num_reqs=max_reqs, vocab_size=VOCAB,
        all_token_ids=SimpleNamespace(gpu=torch.zeros(max_reqs, max_len, dtype=torch.int32)),
        prompt_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
        prefill_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
        total_len=SimpleNamespace(gpu=torch.zeros(max_reqs, dtype=torch.int32)),
    )


def _ctx(slots):
    idx = torch.tensor(slots, dtype=torch.int32)
    return LogitsContext(
        expanded_idx_mapping=idx, idx_mapping=idx, idx_mapping_np=np.array(slots),
        expanded_local_pos=torch.zeros(len(slots), dtype=torch.int32),
        input_ids=torch.zeros(len(slots), dtype=torch.int32),
        pos=torch.zeros(len(slots), dtype=torch.int32),
        seq_lens_upper_bound_np=np.zeros(len(slots), dtype=np.int32),
    )


def test_v2_adapter_masks_per_slot_and_follows_committed_tokens():
    rs = _state()
    proc = SlateLogitsProcessorV2(vllm_config=None, req_states=rs)
    spec = SlateSpec(k=2, eos_token_id=EOS, handle_tokens=[10, 11, 12], categories=[0, 0, 1],
                     category_caps=[1])
    assert proc.add_request(1, SamplingParams(extra_args=spec.to_extra_args()))
    assert not proc.add_request(0, SamplingParams())  # a plain request in another slot
    rs.prompt_len.np[1] = 5
    rs.total_len.gpu[1] = 5

    logits = torch.zeros(2, VOCAB)
    out = proc.apply(logits, _ctx([0, 1]))
    assert torch.isfinite(out[0]).all()  # untouched row
    assert set(torch.nonzero(torch.isfinite(out[1])).flatten().tolist()) == {10, 11, 12}

    rs.all_token_ids.gpu[1, 5] = 10  # the engine committed handle 10 (category 0)
    rs.total_len.gpu[1] = 6
    out = proc.apply(torch.zeros(1, VOCAB), _ctx([1]))
    assert set(torch.nonzero(torch.isfinite(out[0])).flatten().tolist()) == {12}

    rs.all_token_ids.gpu[1, 6] = 12
    rs.total_len.gpu[1] = 7
    out = proc.apply(torch.zeros(1, VOCAB), _ctx([1]))
    assert torch.nonzero(torch.isfinite(out[0])).flatten().tolist() == [EOS]


def test_v2_slot_reuse_resets_state():
    rs = _state()
    proc = SlateLogitsProcessorV2(vllm_config=None, req_states=rs)
    spec = SlateSpec(k=1, eos_token_id=EOS, handle_tokens=[10, 11], categories=[0, 0])
    proc.add_request(0, SamplingParams(extra_args=spec.to_extra_args()))
    assert not proc.add_request(0, SamplingParams())
    logits = torch.zeros(1, VOCAB)
    assert torch.isfinite(proc.apply(logits, _ctx([0]))).all()
