"""
Sample from a phi model, streaming the text as it is produced.

    python sample.py --prompt "def print_prime(n):"                       # out/ckpt.pt from train.py
    python sample.py --init_from=microsoft/phi-1_5 --prompt "Alice was"    # the official weights
    python sample.py --init_from=scratch:phi-nano                          # fresh random weights
    python sample.py --init_from=microsoft/phi-1_5 --quantize int8 --compile --prompt "Alice was"

Decoding keeps a preallocated KV cache (model.setup_cache): one forward over the prompt, then one
token per step. A prompt that does not fit in the context together with --max_new_tokens is an
error (it is not truncated). An empty prompt starts from <|endoftext|>. --quantize int8 stores every
Linear's weight in int8 (quantize.py), quantized while loading; with --compile it decodes faster on the
CPU (BENCHMARKS.md).
"""

import codecs
import sys
import time

import torch

from checkpoint import load_model
from common import DTYPES, Parser, compile_decode_step, finite_float, resolve_device_dtype
from quantize import METHODS
from tokenizer import Tokenizer, check_vocab_size


def parse_args(argv=None):
    p = Parser(prog="sample.py", description="Sample text from a phi model.")
    p.add_argument("--init_from", default="out/ckpt.pt",
                   help="a nanophi checkpoint (.pt from train.py), a Hugging Face phi directory, a hub "
                        "name such as microsoft/phi-1_5 (from the local cache), or scratch:PRESET")
    p.add_argument("--prompt", default="", help="the prompt, or FILE:path to read it from a file")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--temperature", type=finite_float, default=0.8, help="0 is greedy decoding")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top_p", type=finite_float, default=None, help="nucleus sampling: the smallest set of "
                   "tokens whose probability reaches top_p")
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ...; auto picks cuda when there is one")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="auto: bfloat16 on a GPU that has it, else float32")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    p.add_argument("--quantize", default=None, choices=METHODS, help="int8: every Linear's weight in int8 "
                   "with a float scale per output channel, quantized while loading (quantize.py)")
    p.add_argument("--ignore_eot", action="store_true", help="do not stop at <|endoftext|>")
    args = p.parse_args(argv)
    if args.max_new_tokens < 1:
        p.error("--max_new_tokens must be at least 1")
    if args.temperature < 0:
        p.error("--temperature must be >= 0")
    if args.top_k is not None and args.top_k < 1:
        p.error("--top_k must be at least 1")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error("--top_p must be in (0, 1]")
    if args.num_samples < 1:
        p.error("--num_samples must be at least 1")
    return args


def read_prompt(prompt: str) -> str:
    if prompt.startswith("FILE:"):
        path = prompt.removeprefix("FILE:")
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise FileNotFoundError(f"cannot read the prompt file {path} ({e.strerror})") from None
        except UnicodeDecodeError as e:  # read() decodes the whole file at once: e.object is all of it
            line = e.object.count(b"\n", 0, e.start) + 1
            raise ValueError(f"the prompt file {path}:{line}: not valid UTF-8; save it as UTF-8") from None
    return prompt


def main(argv=None) -> None:
    args = parse_args(argv)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(args.seed)
    model = load_model(args.init_from, device=device, dtype=dtype, quantize=args.quantize).eval()
    check_vocab_size(model.config.vocab_size, args.init_from)
    tokenizer = Tokenizer()
    prompt = read_prompt(args.prompt)
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    model.check_fits(len(ids), args.max_new_tokens)  # before the prompt is printed
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    stop_id = None if args.ignore_eot else tokenizer.eot_id

    step = None
    if args.compile:  # the one-token decode step (the prefill runs once and stays eager)
        step = compile_decode_step(model, device)
        t0 = time.perf_counter()
        model.setup_cache(1, len(ids) + args.max_new_tokens)
        with torch.inference_mode():  # a throwaway step, just to compile; the prefill overwrites it
            step(torch.zeros(1, 1, dtype=torch.long, device=device), input_pos=torch.tensor([0], device=device))
        print(f"compiled the decode step in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    generator = torch.Generator(device=device).manual_seed(args.seed)
    n_tokens, seconds = 0, 0.0
    for s in range(args.num_samples):
        sys.stdout.write(prompt)
        sys.stdout.flush()
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # never print half a character
        t0 = time.perf_counter()
        for token in model.generate(idx, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                                    stop_id=stop_id, generator=generator, step=step):
            t = int(token[0])
            n_tokens += 1
            if t == stop_id:
                break
            sys.stdout.write(utf8.decode(tokenizer.decode_bytes([t])))
            sys.stdout.flush()
        seconds += time.perf_counter() - t0
        sys.stdout.write(utf8.decode(b"", final=True) + "\n")
        if s + 1 < args.num_samples:
            sys.stdout.write("---------------\n")
        sys.stdout.flush()
    print(f"{n_tokens} tokens in {seconds:.2f}s: {n_tokens / seconds:.1f} tokens/s "
          f"(prefill included; {device.type}, {str(dtype).removeprefix('torch.')})", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:
        sys.exit(f"sample.py: error: {e}")
