"""HumanEval: the 164 problems, every canonical solution passes in the sandbox (tests/test_sandbox.py
covers the sandbox itself); pass@k against hand-computed values and against its combinatorial
definition; completions stop at the stop sequences, HumanEval's and those of MBPP and SQuAD."""

import itertools
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

from eval import MBPP_STOPS, SQUAD_STOPS, complete, execute_samples, pass_at_k, pass_at_ks, read_humaneval, truncate_at_stop
from tokenizer import Tokenizer


@pytest.fixture(scope="module")
def problems():
    return read_humaneval()


# -----------------------------------------------------------------------------
# The data and the canonical solutions

def test_humaneval_has_its_164_problems(problems):
    assert len(problems) == 164
    assert [p["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert problems[0]["entry_point"] == "has_close_elements"


def test_sandbox_passes_every_canonical_solution(problems):
    samples = [dict(task_id=p["task_id"], completion=p["canonical_solution"]) for p in problems]
    results = execute_samples(problems, samples, timeout=3.0, workers=4)
    failed = [(r["task_id"], r["result"]) for r in results if not r["passed"]]
    assert failed == [] and len(results) == 164
    assert pass_at_ks(results, [1]) == {"pass@1": 1.0}


# -----------------------------------------------------------------------------
# pass@k

def test_pass_at_k_hand_computed_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45, abs=1e-15)  # 1 - C(7,2)/C(10,2)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)           # 1 - C(3,2)/C(5,2)
    assert pass_at_k(200, 0, 100) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0  # every draw of 4 includes the correct one
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_is_the_chance_that_k_draws_include_a_correct_sample():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
                exact = Fraction(sum(any(d) for d in draws), len(draws))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_ks_averages_over_problems_and_skips_k_larger_than_n():
    results = [dict(task_id="a", passed=p) for p in (True, False, False)] + \
              [dict(task_id="b", passed=p) for p in (True, True, False)]
    got = pass_at_ks(results, [1, 2, 10])
    assert got == pytest.approx({"pass@1": (1 / 3 + 2 / 3) / 2, "pass@2": (1 - 1 / 3 + 1) / 2})


# -----------------------------------------------------------------------------
# Completions and stop sequences

def test_truncate_at_stop_cuts_at_the_earliest_stop_sequence():
    assert truncate_at_stop("    return x\n\ndef g():\n    pass\n") == "    return x\n"
    assert truncate_at_stop("    return x\n# note\nclass A:\n") == "    return x"
    assert truncate_at_stop("    return x\nprint(f(1))\n") == "    return x"
    assert truncate_at_stop("    return x\nif __name__ == '__main__':\n") == "    return x"
    # indented code is not a top-level statement
    assert truncate_at_stop("    if x:\n        # why\n        print(x)\n    return x\n") == \
        "    if x:\n        # why\n        print(x)\n    return x\n"


class Scripted(torch.nn.Module):
    """Stands in for Phi.generate: yields scripted tokens for each row, then <|endoftext|>."""

    def __init__(self, rows):
        super().__init__()
        self.rows, self.steps = rows, 0
        self.config = SimpleNamespace(block_size=2048)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def generate(self, idx, max_new_tokens, temperature, top_k=None, top_p=None, stop_id=None, generator=None):
        assert idx.shape[0] == len(self.rows)
        for i in range(max_new_tokens):
            self.steps += 1
            yield torch.tensor([r[i] if i < len(r) else stop_id for r in self.rows])


def test_completions_stop_at_stop_sequences_and_at_endoftext():
    tok = Tokenizer()
    first = "    return a + b\n\n\ndef other():\n    pass\n" * 3
    second = "    if a:\n        return b\n    return a"  # no stop sequence: ends at <|endoftext|>
    model = Scripted([tok.encode(first), tok.encode(second)])
    got = complete(model, tok, "def add(a, b):\n", n=2, temperature=0.0, top_p=None, max_new_tokens=100)
    assert got == ["    return a + b\n\n", second]
    assert model.steps == len(tok.encode(second)) + 1  # stopped once both rows were done

    model = Scripted([tok.encode(first)])
    assert complete(model, tok, "x", n=1, temperature=0.0, top_p=None, max_new_tokens=100) == ["    return a + b\n\n"]
    assert model.steps == len(tok.encode("    return a + b\n\n\ndef"))  # no token decoded past the stop


def test_mbpp_and_squad_completions_stop_at_their_own_stop_sequences():
    tok = Tokenizer()
    code = "def f(x):\n    return x\n\ndef g():\n    pass\n"  # HumanEval would stop at \ndef; MBPP runs on to [DONE]
    model = Scripted([tok.encode(code + "[DONE]\n\nYou are an expert")])
    assert complete(model, tok, "[BEGIN]\n", n=1, temperature=0.0, top_p=None, max_new_tokens=100,
                    stops=MBPP_STOPS) == [code]
    assert model.steps == len(tok.encode(code + "[DONE]"))
    model = Scripted([tok.encode(" Denver Broncos\n\nQuestion: Who lost?")])
    assert complete(model, tok, "Answer:", n=1, temperature=0.0, top_p=None, max_new_tokens=100,
                    stops=SQUAD_STOPS) == [" Denver Broncos"]
    assert model.steps == len(tok.encode(" Denver Broncos\n"))


def test_a_prompt_longer_than_the_context_is_an_error():
    model = Scripted([[1]])
    model.config.block_size = 8
    with pytest.raises(ValueError, match="does not fit|context"):
        complete(model, Tokenizer(), "word " * 20, n=1, temperature=0.0, top_p=None, max_new_tokens=4)

