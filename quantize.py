"""
Weight-only int8: every Linear of phi (lm_head included) keeps its weight as int8 with one float32
scale per output channel, for decoding, whose speed is set by the bytes of weights read per token.

    scales[j] = max_k |W[j, k]| / 127        q[j, k] = round(W[j, k] / scales[j]),  in [-127, 127]
    x W^T + b  ~  (x q^T) * scales + b       each weight within half a step, scales[j] / 2

A weight is then 1 byte instead of 4 (float32) or 2 (bfloat16). Activations, biases, LayerNorms and
the embedding (of which decoding reads one row a token) stay in the model's dtype.

    quantize_int8(w)         (q, scales) of one weight matrix
    quantize_model(model)    replace every nn.Linear of a built model by an Int8Linear
    Int8Linear               the layer: int8 weight, float32 scales, bias

Loading quantizes tensor by tensor (checkpoint.from_state_dict(..., quantize="int8")), with the same
quantize_int8, so the model equals one quantized after loading, and the float model is never whole in
memory: a safetensors file gives each tensor a memory map of its own, which goes with the tensor. (A
.pt or .bin file is one map, whose pages stay resident once read, as file cache the system can take
back, until loading ends.) `python quantize.py` writes a quantized checkpoint that --init_from reads
back, or measures what int8 changes (--compare).

How Int8Linear computes (x q^T) * scales + b, measured in bench.py sample (BENCHMARKS.md):
- decoding (at most FEW_ROWS rows) on the CPU under torch.compile (common.compile_decode_step): a
  multiply and a sum, which inductor fuses into one vectorized reduction that reads each int8
  weight once and converts it in registers;
- decoding on the CPU, eager: torch.ops.aten._weight_int8pack_mm, PyTorch's int8 weight-only
  matmul (gpt-fast's choice on the CPU); with float32 activations it is slower than --compile;
- anything else (a prompt, a window of tokens, CUDA and MPS): dequantize to the activations' dtype
  and matmul, as gpt-fast does on GPUs. A matmul over many rows reuses each weight, so the
  conversion costs little; on CUDA torch.compile can fuse it into the matmul (not yet measured on
  a GPU). Eager decoding on CUDA dequantizes every weight each token: use --compile there.

Reference (read to learn, not copied): gpt-fast's WeightOnlyInt8QuantHandler (quantize.py).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

METHODS = ("int8",)  # the values of --quantize

# Up to this many rows (tokens x sequences) a matmul on the CPU runs the int8 kernel; more rows reuse
# each weight enough that dequantizing it first is faster (the crossover, timed on an 8192 x 2048
# float32 weight, is in BENCHMARKS.md).
FEW_ROWS = 4


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of a (out, in) matrix: q (int8, in [-127, 127]) and float32
    scales (out,), computed in float32 whatever w's dtype. A row of zeros gets scale 1 (its q is 0)."""
    w = w.detach().float()
    lo, hi = torch.aminmax(w, dim=1)  # no |w| temporary the size of w
    amax = torch.maximum(-lo, hi)
    if not w.is_meta and not bool(torch.isfinite(amax).all()):  # (meta: shapes only, no values)
        raise ValueError("holds nan or inf, which int8 cannot represent")
    scales = torch.where(amax > 0, amax / 127, 1.0)
    q = torch.div(w, scales[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """y = (x q^T) * scales + bias, for an nn.Linear quantized by quantize_int8. The buffers keep
    nn.Linear's names (weight, bias) plus scales, so a checkpoint reads as the float one does."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.bias = bias  # the Linear's Parameter, in the model's dtype (or None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(*quantize_int8(linear.weight), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.numel() <= FEW_ROWS * x.shape[-1]:  # decoding
            if torch.compiler.is_compiling():
                y = (x.unsqueeze(-2) * self.weight).sum(-1) * self.scales.to(x.dtype)
            else:
                y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.weight,
                                                       self.scales.to(x.dtype))
                y = y.view(*x.shape[:-1], -1)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, int8"


def quantize_model(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of model by its Int8Linear, in place, one layer at a time (so the
    float weights are freed as it goes). On the meta device it makes empty layers of the right
    shapes, which checkpoint.from_state_dict fills."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                try:
                    setattr(module, child_name, Int8Linear.from_linear(child))
                except ValueError as e:
                    raise ValueError(f"{'.'.join(filter(None, (name, child_name)))}.weight {e}") from None
    return model


@torch.no_grad()
def compare(model: nn.Module, int8: nn.Module, tokens: torch.Tensor, n_prompts: int = 20, prompt_len: int = 32,
            new_tokens: int = 128) -> dict:
    """What int8 changes: greedy decoding of both models from n_prompts prompts of prompt_len tokens,
    taken at evenly spaced places of tokens (1-D), new_tokens each. Returns how many continuations
    are the same throughout, the share of positions with the same token, and the share where int8's
    most likely next token is float's, along float's continuation (the same context for both)."""
    starts = torch.linspace(0, len(tokens) - prompt_len, n_prompts).long()
    prompts = torch.stack([tokens[s:s + prompt_len] for s in starts.tolist()])
    ours = torch.stack(list(model.generate(prompts, new_tokens, temperature=0)), 1)
    theirs = torch.stack(list(int8.generate(prompts, new_tokens, temperature=0)), 1)
    seq = torch.cat([prompts, ours], 1)
    along = int8(seq[:, :-1])[:, prompt_len - 1:].argmax(-1)
    return dict(prompts=n_prompts, new_tokens=new_tokens, identical=int((ours == theirs).all(1).sum()),
                same_positions=(ours == theirs).float().mean().item(), same_next=(along == ours).float().mean().item())


def main(argv=None) -> None:
    """python quantize.py --init_from microsoft/phi-1_5 --out phi-1_5-int8.safetensors
    python quantize.py --init_from out/demo/ckpt.pt --compare data/textbooks
    (perplexity in int8: eval.py --tasks ppl --quantize int8)"""
    import time
    import numpy as np
    from checkpoint import from_state_dict, load_model, save_quantized
    from common import Parser
    from data.shards import open_split
    p = Parser(prog="quantize.py", description="Write an int8 checkpoint (safetensors) that --init_from reads, or "
               "measure what int8 changes to greedy decoding.")
    p.add_argument("--init_from", required=True, help="any --init_from of sample.py (a .pt, a Hugging Face "
                   "directory or hub name)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="the file to write, ending in .safetensors")
    what.add_argument("--compare", metavar="DATA_DIR", help="a corpus (data/prepare_textbooks.py's --out_dir): "
                      "greedy decoding in float32 and int8 from 20 prompts of its val split")
    p.add_argument("--quantize", default="int8", choices=METHODS)
    args = p.parse_args(argv)
    if args.out is not None and not args.out.endswith(".safetensors"):
        p.error("--out must end in .safetensors (the extension --init_from recognizes)")
    t0 = time.perf_counter()
    if args.out is not None:
        model = load_model(args.init_from, quantize=args.quantize)
        save_quantized(model, args.out)
        n_bytes = sum(t.nbytes for t in model.state_dict().values())
        print(f"wrote {args.out}: {n_bytes / 1e9:.2f} GB of tensors, {args.quantize}, in "
              f"{time.perf_counter() - t0:.1f}s")
        return
    model = load_model(args.init_from, dtype=torch.float32).eval()
    int8 = from_state_dict(model.config, dict(model.state_dict()), quantize=args.quantize).eval()
    val, name = open_split(args.compare, "val")
    tokens = torch.from_numpy(np.asarray(val[:], dtype=np.int64))
    if len(tokens) < 32:
        raise ValueError(f"{name} holds {len(tokens)} tokens, fewer than one 32-token prompt")
    if int(tokens.max()) >= model.config.vocab_size:
        raise ValueError(f"{name} holds token id {int(tokens.max())}, outside the model's vocabulary of "
                         f"{model.config.vocab_size}: a corpus made for another tokenizer")
    c = compare(model, int8, tokens, new_tokens=min(128, model.config.block_size - 32))  # what the context holds
    print(f"greedy decoding, {c['prompts']} prompts of {name} x {c['new_tokens']} new tokens: "
          f"{c['identical']} of {c['prompts']} continuations identical; the same token at "
          f"{100 * c['same_positions']:.1f}% of the positions; along float32's continuations, {args.quantize}'s "
          f"most likely next token is float32's at {100 * c['same_next']:.1f}% ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    from common import run_script
    run_script(main, "quantize.py", "")
