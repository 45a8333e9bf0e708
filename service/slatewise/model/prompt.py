"""Prompts laid out for vLLM's prefix cache and against position copying.

Layout: fixed instructions, then the catalogue context (one line per item:
handle, title, category, key attributes), then the request last. Requests
that share a context therefore share a token-identical prefix, which vLLM's
prefix cache serves from KV blocks instead of recomputing.

Small models copy positions (asked for 10 of 50 listed items, SmolLM2 answers
with ten consecutive lines), so the listing must carry no relevance signal:
items are ordered by a hash of their id (stable for a given set, unrelated to
the pointwise order) and handles are dealt by a separate hash-seeded shuffle,
so neither line order nor handle letters track relevance. Relevance reaches
the model through the request and, optionally, as a logit prior.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slatewise.domain import Candidate, SlateRequest
from slatewise.model.handles import HandleSet

INSTRUCTIONS = (
    "You are a shopping assistant who composes a slate: a short list of items "
    "that work well together for the shopper's request, like a complete outfit "
    "rather than several versions of the same thing.\n"
    "The catalogue lists one item per line as: * HANDLE = title (category; key attributes).\n"
    "Answer only with the HANDLEs of the items you choose, separated by spaces, "
    "most important first, each item at most once.\n\nCatalogue:\n"
)
_USER_MARK = "\x00SLATEWISE_USER\x00"
_SYSTEM_END = "\x00SLATEWISE_SYSTEM_END\x00"
KEY_ATTRIBUTES = ("style", "colour", "color", "price")


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def item_line(handle: str, title: str, category: str, attributes: Mapping[str, str]) -> str:
    keys = [k for k in KEY_ATTRIBUTES if k in attributes] or list(attributes)[:3]
    values = []
    for key in keys:
        value = attributes[key]
        values.append(f"${value.split('.')[0]}" if key == "price" else value)
    detail = "; ".join([category] + ([", ".join(values)] if values else []))
    # Newlines inside caller text would forge extra catalogue lines.
    title = " ".join(title.split())
    return f"*{handle} = {title} ({' '.join(detail.split())})"


@dataclass(frozen=True, eq=False)
class ModelContext:
    """The shared part of a prompt and the handle of every listed item."""

    ids: tuple[str, ...]  # listed item ids, in listed order
    handle_token: Mapping[str, int]
    position: Mapping[str, int]  # id -> listed line (for position-bias figures)
    prefix_tokens: tuple[int, ...]
    suffix_text: str  # chat-template text after the user's content

    def __len__(self) -> int:
        return len(self.ids)


class PromptBuilder:
    def __init__(self, tokenizer, handles: HandleSet, cache_size: int = 256,
                 align_tokens: int = 128) -> None:
        self.tokenizer = tokenizer
        self.handles = handles
        # vLLM caches whole KV blocks only (128 tokens on CPU): a shared prefix
        # padded to a block multiple is reused entirely, instead of leaving up
        # to 127 shared tokens to be recomputed by every request.
        self.align_tokens = align_tokens
        pad = tokenizer.encode("\n", add_special_tokens=False)
        self._pad_token = pad[0] if len(pad) == 1 else None
        self._cache: OrderedDict[tuple, ModelContext] = OrderedDict()
        self._cache_size = cache_size

    def context(self, items: Sequence[Candidate], cache_key: tuple | None = None) -> ModelContext:
        """Context for a set of items (order of ``items`` does not matter)."""
        if cache_key is not None and (hit := self._cache.get(cache_key)) is not None:
            self._cache.move_to_end(cache_key)
            return hit
        if len(items) > len(self.handles):
            raise ValueError(f"{len(items)} items exceed the {len(self.handles)} handles")
        ordered = sorted(items, key=lambda c: (_stable_hash(c.id), c.id))
        seed = _stable_hash("\n".join(c.id for c in ordered))
        deal = list(range(len(self.handles)))
        random.Random(seed).shuffle(deal)
        lines, handle_token, position = [], {}, {}
        for pos, (cand, h) in enumerate(zip(ordered, deal)):
            lines.append(item_line(self.handles.texts[h], cand.title, cand.category, cand.attributes))
            handle_token[cand.id] = self.handles.tokens[h]
            position[cand.id] = pos
        system = INSTRUCTIONS + "\n".join(lines) + _SYSTEM_END
        text = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": _USER_MARK}],
            tokenize=False, add_generation_prompt=True,
        )
        prefix_text, suffix_text = text.split(_USER_MARK)
        system_text, turn_text = prefix_text.split(_SYSTEM_END)
        ctx = ModelContext(
            ids=tuple(c.id for c in ordered),
            handle_token=handle_token,
            position=position,
            prefix_tokens=self._aligned(self._encode(system_text), self._encode(turn_text)),
            suffix_text=suffix_text,
        )
        if cache_key is not None:
            self._cache[cache_key] = ctx
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ctx

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _aligned(self, system: list[int], turn: list[int]) -> tuple[int, ...]:
        """Pad the end of the system text with newlines so that the shared
        prefix (system turn + the start of the user turn) ends on a block edge."""
        total = len(system) + len(turn)
        missing = -total % self.align_tokens if self.align_tokens > 1 and self._pad_token is not None else 0
        return tuple(system + [self._pad_token] * missing + turn)

    def request_text(self, request: SlateRequest, history_titles: Sequence[str]) -> str:
        lines = [f"Request: {' '.join(request.query.split()) or 'anything suitable'}"]
        if request.context_attributes:
            details = "; ".join(f"{k}: {v}" for k, v in sorted(request.context_attributes.items()))
            lines.append(f"Details: {' '.join(details.split())}")
        if history_titles:
            lines.append("Recently viewed: " + "; ".join(" ".join(t.split()) for t in history_titles))
        lines.append(f"Choose {request.k} items.")
        return "\n".join(lines)

    def prompt_tokens(self, ctx: ModelContext, request: SlateRequest,
                      history_titles: Sequence[str] = ()) -> list[int]:
        tail = self.request_text(request, history_titles) + ctx.suffix_text
        return list(ctx.prefix_tokens) + self.tokenizer.encode(tail, add_special_tokens=False)
