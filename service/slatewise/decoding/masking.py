"""Turn the automaton's verdict into logits, shared by both runner adapters."""

from __future__ import annotations

import torch

from slatewise.decoding.automaton import SlateAutomaton


def constrain_row(automaton: SlateAutomaton, logits: torch.Tensor) -> torch.Tensor:
    """Return a row where only the allowed next tokens keep a finite logit.

    Everything else becomes -inf, so neither sampling nor greedy decoding can
    leave the slate language, whatever the model or the prompt says.
    """
    out = torch.full_like(logits, float("-inf"))
    if automaton.done:
        eos = automaton.spec.eos_token_id
        out[eos] = 0.0
        return out
    allowed = automaton.allowed()
    tokens = torch.tensor(
        [automaton.spec.handle_tokens[i] for i in allowed], dtype=torch.long, device=logits.device
    )
    if automaton.spec.dpp_beta is not None:
        # Greedy DPP: the first step's logits fix the quality; from then on
        # the row is each allowed item's log marginal gain, so greedy
        # decoding commits exactly the DPP's pick and sampling draws in
        # proportion to the gain.
        if automaton.dpp is None:
            every = torch.tensor(list(automaton.spec.handle_tokens), dtype=torch.long, device=logits.device)
            automaton.start_dpp(logits[every].float().tolist())
        gains = torch.tensor(automaton.dpp_gains(allowed), dtype=logits.dtype, device=logits.device)
        out[tokens] = gains
        return out
    bias = torch.tensor(
        [automaton.bias(i) for i in allowed], dtype=logits.dtype, device=logits.device
    )
    out[tokens] = logits[tokens] + bias
    return out
