"""Turn the automaton's verdict into logits, shared by both runner adapters."""

from __future__ import annotations

import torch

from slatewise.decoding.automaton import SlateAutomaton


def handle_tensor(automaton: SlateAutomaton, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor(list(automaton.spec.handle_tokens), dtype=torch.long, device=device)


def constrain_row(automaton: SlateAutomaton, logits: torch.Tensor,
                  handles: torch.Tensor | None = None) -> torch.Tensor:
    """Return a row where only the allowed next tokens keep a finite logit.

    Everything else becomes -inf, so neither sampling nor greedy decoding can
    leave the slate language, whatever the model or the prompt says.
    ``handles`` (the spec's handle tokens as a tensor) may be passed in by a
    caller that keeps it per request: this runs for every request at every step.
    """
    out = torch.full_like(logits, float("-inf"))
    if automaton.done:
        out[automaton.spec.eos_token_id] = 0.0
        return out
    if handles is None:
        handles = handle_tensor(automaton, logits.device)
    mask = automaton.allowed_mask()
    tokens = handles[torch.from_numpy(mask).to(logits.device)]
    if automaton.spec.dpp_beta is not None:
        # Greedy DPP: the first step's logits fix the quality; from then on
        # the row is each allowed item's log marginal gain, so greedy
        # decoding commits exactly the DPP's pick and sampling draws in
        # proportion to the gain.
        if automaton.dpp is None:
            automaton.start_dpp(logits[handles].float().cpu().numpy())
        values = torch.from_numpy(automaton.dpp_gains(mask))
    else:
        values = logits[tokens].float().cpu() + torch.from_numpy(automaton.biases()[mask])
    out[tokens] = values.to(device=logits.device, dtype=logits.dtype)
    return out
