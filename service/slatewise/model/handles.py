"""Single-token handles: how the model names an item in one generated token.

Each candidate is listed and answered as a handle like " QX" that the model's
tokenizer encodes as exactly one token (with its leading space), so a slate of
K items costs K tokens and every item is complete the moment its one
token is sampled. SmolLM2's tokenizer has 375 such two-capital handles.
"""

from __future__ import annotations

import string
from dataclasses import dataclass


@dataclass(frozen=True)
class HandleSet:
    texts: tuple[str, ...]  # e.g. " QX" (leading space included)
    tokens: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)


def single_token_handles(tokenizer, specials: set[int] | None = None) -> HandleSet:
    specials = set(specials or ()) | set(getattr(tokenizer, "all_special_ids", []) or [])
    texts, tokens = [], []
    for a in string.ascii_uppercase:
        for b in string.ascii_uppercase:
            text = f" {a}{b}"
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in specials and tokenizer.decode(ids) == text:
                texts.append(text)
                tokens.append(ids[0])
    return HandleSet(tuple(texts), tuple(tokens))
