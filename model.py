"""
The phi decoder (phi-1, phi-1.5, phi-2) in one file, computing exactly what Hugging Face's
PhiForCausalLM computes.

    x = embed_tokens(idx)
    for each layer:  n = input_layernorm(x);  x = x + attention(n) + mlp(n)     (a *parallel* block)
    logits = lm_head(final_layernorm(x))

What makes phi different from GPT-2: the attention and the MLP read the same LayerNorm output and
are added to the residual together; rotary position embeddings rotate only the first rotary_dim
dims of each head; every Linear has a bias, including the untied lm_head.

Module and parameter names are the official ones (model.layers.0.self_attn.q_proj.weight, ...), so
loading the Hugging Face weights (checkpoint.py) is a 1:1 name map. Attention, LayerNorm, the
rotary embedding, the MLP's GELU and the loss are calls into kernels.py, which runs them in Triton
on GPUs and in PyTorch elsewhere. Decoding uses a preallocated static KV cache (as gpt-fast does):
one prefill, then one token per step.

References: transformers/models/phi/modeling_phi.py, Microsoft's modeling_mixformer_sequential.py.
"""

import math
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import torch
import torch.nn as nn

import kernels


# -----------------------------------------------------------------------------
# Config

# The longest context a config may ask for. The rotary tables (block_size x rotary_dim, cos and sin,
# float32) are made when the model is built: 2**20 positions make them 256 MiB for phi's rotary_dim
# of 32 (a config.json with max_position_embeddings 10**12 asked for 4 TB).
MAX_BLOCK_SIZE = 2 ** 20


@dataclass
class PhiConfig:
    vocab_size: int = 51200       # 50295 real tokens, padded to a multiple of 64 (rows past 50294 are unused)
    n_layer: int = 24
    n_head: int = 32
    n_embd: int = 2048
    n_inner: int = 8192           # MLP hidden width
    rotary_dim: int = 32          # how many dims of each head rotate (phi-1.5: 32 of 64)
    rope_theta: float = 10000.0
    block_size: int = 2048        # context length (max_position_embeddings)
    layer_norm_eps: float = 1e-5
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    initializer_range: float = 0.02
    # who computes attention, LayerNorm, rope, GELU and the loss: "triton", "torch", or "auto" (Triton
    # on CUDA when it imports); see kernels.py. Not part of the Hugging Face config.json.
    kernels: str = "auto"

    def __post_init__(self):
        # a checkpoint's model_args arrive here unchecked: True would pass for the integer 1, and a
        # string layer_norm_eps would fail only in the forward
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is int and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= (f.name != "rotary_dim")):
                raise ValueError(f"PhiConfig.{f.name} must be a positive integer, got {value!r}")
            if f.type is float and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                        and math.isfinite(value)):
                raise ValueError(f"PhiConfig.{f.name} must be a finite number, got {value!r}")
        if self.block_size > MAX_BLOCK_SIZE:
            raise ValueError(f"PhiConfig.block_size must be at most {MAX_BLOCK_SIZE}, got {self.block_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"PhiConfig: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if not (self.rotary_dim <= self.head_dim and self.rotary_dim % 2 == 0):
            raise ValueError(f"PhiConfig: rotary_dim {self.rotary_dim} must be even and at most "
                             f"head_dim {self.head_dim}")
        if self.kernels not in ("auto", "triton", "torch"):
            raise ValueError(f"PhiConfig: kernels must be 'auto', 'triton' or 'torch', got {self.kernels!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str) -> "PhiConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**PRESETS[name])


PRESETS = {
    # the official shapes
    "phi-1": dict(n_layer=24, n_head=32, n_embd=2048, n_inner=8192, rotary_dim=32),
    "phi-1.5": dict(n_layer=24, n_head=32, n_embd=2048, n_inner=8192, rotary_dim=32),
    "phi-2": dict(n_layer=32, n_head=32, n_embd=2560, n_inner=10240, rotary_dim=32, resid_pdrop=0.1),
    # small shapes with phi's proportions (head_dim 64, rotary 32, MLP 4x), for CPU runs
    "phi-mini": dict(n_layer=6, n_head=8, n_embd=512, n_inner=2048, rotary_dim=32),  # benchmarks
    "phi-nano": dict(n_layer=4, n_head=4, n_embd=256, n_inner=1024, rotary_dim=32, block_size=256),  # CPU demo
    "phi-test": dict(n_layer=2, n_head=4, n_embd=64, n_inner=256, rotary_dim=8, vocab_size=512, block_size=64),
}


# -----------------------------------------------------------------------------
# Rotary position embedding (partial, rotate-half: kernels.rope applies it)

def rope_tables(config: PhiConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (block_size, rotary_dim), in float32 as the reference computes
    them: inv_freq_i = theta^(-2i/rotary_dim), angle = position * inv_freq, cat(angles, angles)."""
    rd = config.rotary_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


# -----------------------------------------------------------------------------
# The model, in the order data flows

class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (the official names: weight, bias), computed by kernels.layer_norm."""

    def __init__(self, n_embd: int, eps: float, use: str):
        super().__init__(n_embd, eps=eps)
        self.use = use

    def forward(self, x):
        return kernels.layer_norm(x, self.weight, self.bias, self.eps, self.use)


class KVCache(nn.Module):
    """Preallocated keys and values of one layer, (B, H, max_seq_len, D), written in place."""

    def __init__(self, batch_size: int, max_seq_len: int, n_head: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch_size, n_head, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


class PhiAttention(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.n_head, self.head_dim, self.attn_pdrop = config.n_head, config.head_dim, config.attn_pdrop
        self.use = config.kernels
        self.q_proj = nn.Linear(config.n_embd, config.n_embd)
        self.k_proj = nn.Linear(config.n_embd, config.n_embd)
        self.v_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.kv_cache: Optional[KVCache] = None

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        B, T, C = x.shape
        # (B, T, C) -> (B, H, T, D)
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        q, k = kernels.rope(q, cos, sin, self.use), kernels.rope(k, cos, sin, self.use)
        if input_pos is not None:  # decoding: store this step's keys (rotated) and values, read all
            k, v = self.kv_cache.update(input_pos, k, v)
        y = kernels.attention(q, k, v, mask, self.attn_pdrop if self.training else 0.0, self.use)
        return self.dense(y.transpose(1, 2).reshape(B, T, C))


class PhiMLP(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.n_embd, config.n_inner)
        self.fc2 = nn.Linear(config.n_inner, config.n_embd)
        self.use = config.kernels

    def forward(self, x):
        return self.fc2(kernels.gelu_tanh(self.fc1(x), self.use))


class PhiBlock(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.input_layernorm = LayerNorm(config.n_embd, config.layer_norm_eps, config.kernels)
        self.self_attn = PhiAttention(config)
        self.mlp = PhiMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        n = self.input_layernorm(x)  # one LayerNorm feeds both branches
        attn = self.resid_dropout(self.self_attn(n, cos, sin, input_pos, mask))
        mlp = self.resid_dropout(self.mlp(n))
        return attn + mlp + x  # the reference's order of additions, so float32 results match closely


class Phi(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        # nn.ModuleDict named "model" so that parameter names are exactly the official ones
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.n_embd),
            embed_dropout=nn.Dropout(config.embd_pdrop),
            layers=nn.ModuleList(PhiBlock(config) for _ in range(config.n_layer)),
            final_layernorm=LayerNorm(config.n_embd, config.layer_norm_eps, config.kernels),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)  # with bias, not tied
        cos, sin = rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)  # not in checkpoints: recomputed
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # as the official model: N(0, 0.02) weights, zero biases; LayerNorm keeps weight 1, bias 0
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None,
                input_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size).

        With targets (B, T), the next token of each position (-1: ignored, as in nanoGPT), the mean
        cross-entropy instead: the training mode. lm_head is fused into the loss and chunked
        (kernels.linear_cross_entropy), so the (B, T, vocab) logits never exist at once.
        With input_pos (T,), the positions of idx in the KV cache (setup_cache): decoding, which
        needs only the last position's logits, (B, 1, vocab_size)."""
        B, T = idx.shape
        if input_pos is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than the context ({self.config.block_size})")
            cos, sin, mask = self.rope_cos[:T], self.rope_sin[:T], None
        else:
            cache = self.model.layers[0].self_attn.kv_cache
            if cache is None:
                raise RuntimeError("input_pos given but no KV cache: call model.setup_cache() first")
            cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
            # the query at position p sees the cache slots 0..p
            mask = torch.arange(cache.k.shape[2], device=idx.device)[None, :] <= input_pos[:, None]
        x = self.model.embed_dropout(self.model.embed_tokens(idx))
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # the reference computes them in float32, then casts
        for block in self.model.layers:
            x = block(x, cos, sin, input_pos, mask)
        x = self.model.final_layernorm(x)
        if targets is not None:
            if not isinstance(self.lm_head, nn.Linear):  # e.g. quantize.Int8Linear: int8 weight, scales aside
                raise ValueError("the training loss fuses lm_head's float weight into the cross-entropy; "
                                 "this lm_head has none: score its logits, model(idx), instead")
            return kernels.linear_cross_entropy(x, self.lm_head.weight, self.lm_head.bias, targets,
                                                ignore_index=-1, use=self.config.kernels)
        if input_pos is not None:
            x = x[:, [-1]]  # decoding: only the next token's logits are needed
        return self.lm_head(x)

    def configure_optimizer(self, learning_rate: float, weight_decay: float, betas: tuple, eps: float,
                            device: torch.device) -> torch.optim.AdamW:
        """AdamW with weight decay on the matrices (Linear and Embedding weights), not on biases or
        LayerNorm parameters; the fused implementation (one kernel over all parameters)."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps,
                                 fused=device.type in ("cuda", "cpu"))

    # -------------------------------------------------------------------------
    # Decoding

    def setup_cache(self, batch_size: int, max_seq_len: int) -> None:
        """Allocate the static KV cache for batch_size sequences of up to max_seq_len tokens."""
        self.check_fits(max_seq_len, 0)
        p = self.model.embed_tokens.weight  # its dtype and device (Linear weights may be int8: quantize.py)
        for block in self.model.layers:
            c = block.self_attn.kv_cache
            if c is None or c.k.shape[0] != batch_size or c.k.shape[2] != max_seq_len or c.k.dtype != p.dtype:
                block.self_attn.kv_cache = KVCache(batch_size, max_seq_len, self.config.n_head,
                                                   self.config.head_dim, p.dtype, p.device)

    def check_fits(self, n_prompt: int, max_new_tokens: int) -> None:
        """The error for a prompt and max_new_tokens that exceed the context (callers check before
        they print anything)."""
        if n_prompt + max_new_tokens > self.config.block_size:
            raise ValueError(f"the prompt has {n_prompt} tokens and max_new_tokens is {max_new_tokens}: together "
                             f"they exceed the context of {self.config.block_size} tokens; shorten the "
                             f"prompt or lower max_new_tokens")

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 stop_id: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 step=None) -> Iterator[torch.Tensor]:
        """Yield the next token of each row, (B,), max_new_tokens times or until every row has
        produced stop_id. One prefill of the prompt idx (B, T) fills the KV cache, then each step
        feeds one token. temperature 0 is greedy. step: the function that runs one decode step,
        default self (sample.py passes a compiled one: common.compile_decode_step)."""
        B, T = idx.shape
        if T == 0:
            raise ValueError("empty prompt: start from the <|endoftext|> token instead")
        self.check_fits(T, max_new_tokens)
        if max_new_tokens <= 0:
            return
        step = self if step is None else step
        self.setup_cache(B, T + max_new_tokens)
        logits = self(idx, input_pos=torch.arange(T, device=idx.device))
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        pos = torch.tensor([T], device=idx.device)
        for i in range(max_new_tokens):
            token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
            yield token
            if stop_id is not None:
                done |= token == stop_id
                if bool(done.all()):
                    return
            if i + 1 < max_new_tokens:
                logits = step(token[:, None], input_pos=pos)
                pos += 1

    # The official weights (checkpoint.py reads and writes them)
    @classmethod
    def from_pretrained(cls, path: str, dtype: Optional[torch.dtype] = None, device="cpu") -> "Phi":
        import checkpoint
        return checkpoint.from_pretrained(path, dtype, device)

    def save_pretrained(self, path: str, dtype: Optional[torch.dtype] = None) -> None:
        import checkpoint
        checkpoint.save_pretrained(self, path, dtype)


# -----------------------------------------------------------------------------
# Sampling the next token

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(logits, k, dim=-1).values[:, [-1]]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus sampling)."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= p  # the tokens before it already reach p (the first stays)
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The next token of each row of logits (B, V): argmax at temperature 0, else a draw from
    softmax(logits / temperature), restricted to the top_k tokens and then to the top_p nucleus."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator).squeeze(-1)
