"""The slate model: a small Llama whose vocabulary is the catalogue.

Why Llama: vLLM serves ``LlamaForCausalLM`` from config.json +
model.safetensors with no tokenizer (``skip_tokenizer_init=True``), so the
trained model rides the engine, constrained decoding and streaming the server
already has. Token ids: PAD 0, BOS 1, EOS 2, SEP 3, then one token per
catalogue item in catalogue order (item i is token 4 + i).

Shape: head size 32 (vLLM's CPU attention rejects 16 at the first
generate), hidden 64, 2 layers, 2 heads: about 30k parameters plus 64 per
item, which trains in minutes on two cores and decodes a 10-item slate in a
few milliseconds. Input and output embeddings are tied: the item vector that
is read is the one that is scored, so an item seen rarely in the logs is
still scored by where its text put it.

Initialisation: item tokens start from the catalogue's text embeddings
(384-d MiniLM) projected onto their top ``hidden`` principal components
(centred, since MiniLM vectors share a large common direction that says
nothing about the item). The query projection (384 -> hidden, saved beside
the model as ``slatewise/query_projection.safetensors``) starts as the same map, so a
query initially reads as "an item described like this".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slatewise.training.data import BOS, EOS, N_SPECIAL, PAD

# In a subdirectory: vLLM loads every top-level *.safetensors as model weights.
QUERY_PROJECTION_FILE = "slatewise/query_projection.safetensors"


@dataclass(frozen=True)
class ModelShape:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    head_dim: int = 32
    intermediate: int = 128
    max_positions: int = 256
    init_scale: float = 0.1  # std per coordinate of the initial item embeddings


def llama_config(n_items: int, shape: ModelShape):
    from transformers import LlamaConfig

    if shape.head_dim not in (32, 64, 80, 96, 112, 128):
        raise ValueError(f"head_dim {shape.head_dim}: vLLM's CPU attention needs 32, 64, 80, 96, 112 or 128")
    return LlamaConfig(
        vocab_size=N_SPECIAL + n_items, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
        head_dim=shape.head_dim, max_position_embeddings=shape.max_positions, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        dtype="float32", use_cache=True,
    )


def text_projection(vectors: np.ndarray, hidden: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with x @ W + b = the centred vector's top-``hidden`` principal
    coordinates, scaled to std ``scale``. Components the data cannot fill
    (fewer items than ``hidden``) get small random directions."""
    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    w = np.zeros((x.shape[1], hidden))
    m = min(hidden, vt.shape[0])
    w[:, :m] = vt[:m].T
    if m < hidden:
        rng = np.random.default_rng(seed)
        w[:, m:] = rng.normal(scale=1e-2, size=(x.shape[1], hidden - m))
    coords = (x - mean) @ w
    w *= scale / (coords.std() + 1e-12)
    b = -mean @ w
    return w.astype(np.float32), b.astype(np.float32)


class SlateModel(nn.Module):
    """The Llama plus the query projection: one module, so DDP wraps both."""

    def __init__(self, llama, query_projection: nn.Linear):
        super().__init__()
        self.llama = llama
        self.query_projection = query_projection

    @property
    def n_items(self) -> int:
        return self.llama.config.vocab_size - N_SPECIAL

    def embed(self, ids: torch.Tensor, query: torch.Tensor | None = None,
              query_at: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the query slot (``query_at`` >= 0) replaced by
        the projected query: the same tensor the server sends as prompt_embeds."""
        emb = self.llama.get_input_embeddings()(ids)
        if query is not None and query_at is not None:
            rows = torch.nonzero(query_at >= 0).squeeze(1)
            if len(rows):
                emb = emb.clone()
                emb[rows, query_at[rows]] = self.query_projection(query[rows])
        return emb

    def forward(self, ids, attention_mask=None, query=None, query_at=None) -> torch.Tensor:
        """Item logits (B, T, n_items): special tokens are never a target."""
        out = self.llama(inputs_embeds=self.embed(ids, query, query_at), attention_mask=attention_mask,
                         use_cache=False)
        return out.logits[..., N_SPECIAL:]


def build_model(item_vectors: np.ndarray, shape: ModelShape, seed: int) -> SlateModel:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    llama = LlamaForCausalLM(llama_config(len(item_vectors), shape))
    w, b = text_projection(item_vectors, shape.hidden, shape.init_scale, seed)
    with torch.no_grad():
        emb = llama.get_input_embeddings().weight
        emb[N_SPECIAL:] = torch.from_numpy(item_vectors @ w + b)
    proj = nn.Linear(item_vectors.shape[1], shape.hidden)
    with torch.no_grad():
        proj.weight.copy_(torch.from_numpy(w.T.copy()))
        proj.bias.copy_(torch.from_numpy(b))
    return SlateModel(llama, proj)


def save_model(model: SlateModel, out: Path) -> None:
    """config.json + model.safetensors (what vLLM reads) and the query
    projection (what the server applies before prompt_embeds)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.llama.save_pretrained(out)
    (out / QUERY_PROJECTION_FILE).parent.mkdir(exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.query_projection.state_dict().items()},
              str(out / QUERY_PROJECTION_FILE))


def load_model(path: Path) -> SlateModel:
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
    state = load_file(str(path / QUERY_PROJECTION_FILE))
    proj = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    proj.load_state_dict(state)
    return SlateModel(llama, proj)


