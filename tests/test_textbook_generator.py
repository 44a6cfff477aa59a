"""The offline textbook generator's worked answers are right, recomputed here independently (with
decimal, datetime, statistics and Python's own evaluator where they apply), its code examples pass
doctest, and it is deterministic and varied."""

import datetime
import doctest
import math
import random
import re
import statistics
import types
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest

from data import textbook_generator as g


def expected(kind: str, q: dict):
    """The answer of a problem from its numbers, computed without the generator's code."""
    F = Fraction
    if kind == "add":
        return q["a"] + q["b"]
    if kind == "sub":
        return q["a"] - q["b"]
    if kind == "mul":
        return q["a"] * q["b"]
    if kind == "divrem":
        return divmod(q["a"], q["b"])
    if kind == "frac_add":
        n, d = q["a"] * q["d"] + q["c"] * q["b"], q["b"] * q["d"]
        return F(n // math.gcd(n, d), d // math.gcd(n, d))
    if kind == "frac_mul":
        n, d = q["a"] * q["c"], q["b"] * q["d"]
        return F(n // math.gcd(n, d), d // math.gcd(n, d))
    if kind == "frac_simplify":
        k = math.gcd(q["n"], q["d"])
        return F(q["n"] // k, q["d"] // k)
    if kind == "percent_of":
        return F(Decimal(q["p"]) * Decimal(q["n"]) / 100)
    if kind == "discount":
        return F(Decimal(q["price"]) * (100 - q["d"]) / 100)
    if kind == "percent_change":
        return F(100 * (q["new"] - q["old"]), q["old"])
    if kind == "ratio_share":
        part = q["total"] // (q["a"] + q["b"])
        return (part * q["a"], part * q["b"])
    if kind == "linear_eq":
        x = F(q["c"] - q["b"], q["a"])
        return int(x)
    if kind == "rect":
        return (q["w"] * q["h"], q["w"] + q["w"] + q["h"] + q["h"])
    if kind == "triangle":
        return F(Decimal(q["b"]) * q["h"] / 2)
    if kind == "circle":
        pi = Decimal("3.14")
        return (F(2 * pi * q["r"]), F(pi * q["r"] ** 2))
    if kind == "pythagoras":
        return math.isqrt(q["c"] ** 2 - q["a"] ** 2) if "c" in q else math.isqrt(q["a"] ** 2 + q["b"] ** 2)
    if kind == "mean_median":
        return (F(statistics.mean(q["xs"])), F(statistics.median(q["xs"])))
    if kind == "probability":
        total = sum(q["counts"].values())
        fav = total - q["counts"][q["target"]] if q["negate"] else q["counts"][q["target"]]
        return F(fav, total)
    if kind == "gcd_lcm":
        return (math.gcd(q["a"], q["b"]), math.lcm(q["a"], q["b"]))
    if kind == "prime_factors":
        n, fs, p = q["n"], [], 2
        while n > 1:
            while n % p == 0:
                fs.append(p)
                n //= p
            p += 1
        return tuple(fs)
    if kind == "power":
        return pow(q["a"], q["e"])
    if kind == "arith_seq":
        term = q["a1"]
        for _ in range(q["n"] - 1):
            term += q["d"]
        return term
    if kind == "unit_convert":
        factor = {("km", "m"): 1000, ("m", "cm"): 100, ("kg", "g"): 1000, ("L", "mL"): 1000, ("h", "min"): 60,
                  ("min", "s"): 60, ("cm", "mm"): 10}
        if (q["frm"], q["to"]) in factor:
            return q["x"] * factor[q["frm"], q["to"]]
        return F(q["x"], factor[q["to"], q["frm"]])
    if kind == "simple_interest":
        i = Decimal(q["p"]) * q["rate"] * q["t"] / 100
        return (F(i), F(i + q["p"]))
    if kind == "compound_interest":
        amount = Decimal(q["p"]) * (1 + Decimal(q["rate"]) / 100) ** q["t"]
        return F(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    if kind == "elapsed_time":
        t = datetime.datetime(2000, 1, 1) + datetime.timedelta(minutes=q["start"] + q["dur"])
        return t.strftime("%H:%M")
    if kind == "weekday":
        monday = datetime.date(2024, 1, 1)
        assert monday.strftime("%A") == "Monday"
        return (monday + datetime.timedelta(days=q["d0"] + q["n"])).strftime("%A")
    if kind == "order_ops":
        return eval(q["expr"].replace("×", "*"), {"__builtins__": {}})
    if kind == "rounding":
        return int((Decimal(q["n"]) / q["to"]).quantize(Decimal(1), rounding=ROUND_HALF_UP)) * q["to"]
    if kind == "sqrt":
        return math.isqrt(q["n"])
    if kind == "box_volume":
        return q["l"] * q["w"] * q["h"]
    if kind == "triangle_angles":
        return 180 - q["a"] - q["b"]
    if kind == "factors":
        return tuple(d for d in range(1, q["n"] + 1) if q["n"] % d == 0)
    if kind == "decimal_add":
        return F(q["a"]) + F(q["b"])
    if kind == "neg_add":
        return q["t"] + q["d"]
    if kind == "combos":
        return q["a"] * q["b"] * q["d"]
    if kind == "polygon":
        return q["sides"] * q["s"]
    if kind == "divisibility":
        return "yes" if q["n"] % 3 == 0 else "no"
    if kind == "doubling":
        return q["n0"] * 2 ** (q["t"] // q["k"])
    if kind == "speed":
        return F(q["d"], q["t"])
    if kind == "acceleration":
        return F(q["v"] - q["u"], q["t"])
    if kind == "force":
        return q["m"] * F(q["a"])
    if kind == "momentum":
        return q["m"] * q["v"]
    if kind == "density":
        rho = F(q["mass"]) / q["vol"]
        return (rho, next(name for name, d in g.MATERIALS if F(d) == rho))
    if kind == "ohm":
        i, r = F(q["i"]), q["r"]
        return {"V": i * r, "I": i, "R": F(r)}[q["ask"]]
    if kind == "kinetic":
        return F(q["m"] * q["v"] ** 2, 2)
    if kind == "potential":
        return F(Decimal(q["m"]) * Decimal("9.8") * q["h"])
    if kind == "work_power":
        return (q["f"] * q["d"], F(q["f"] * q["d"], q["t"]))
    if kind == "planet_weight":
        return F(q["m"] * Decimal(q["g"]))
    if kind == "temperature":
        return q["c"] * 9 / 5 + 32 if "c" in q else (q["f"] - 32) * 5 / 9
    if kind == "moles":
        return F(q["mass"]) / F(q["mm"])
    if kind == "heat":
        return F(q["m"] * Decimal(q["c"]) * q["dt"])
    if kind == "wave":
        return q["f"] * F(q["lam"])
    if kind == "pressure":
        return F(q["force"], q["area"])
    if kind == "half_life":
        return F(q["m0"]) * F(1, 2) ** (q["t"] // q["T"])
    if kind == "lever":
        return F(q["load"] * q["d_load"], q["d_eff"])
    if kind == "concentration":
        return F(q["mass"]) / F(q["vol"], 1000)
    if kind == "unit_price":
        return "A" if F(q["p1"], q["q1"]) < F(q["p2"], q["q2"]) else "B"
    if kind == "budget":
        total = q["na"] * q["pa"] + q["nb"] * q["pb"]
        return (total, q["bill"] - total)
    if kind == "recipe":
        return F(q["q"]) * q["t"] / q["s"]
    if kind == "logic_order":
        names = {n for pair in q["clues"] for n in pair}
        taller = {n: {b for a, b in q["clues"] if a == n} for n in names}  # whom n is directly taller than
        below = {n: set() for n in names}
        for n in names:  # transitive closure by search
            stack = list(taller[n])
            while stack:
                m = stack.pop()
                if m not in below[n]:
                    below[n].add(m)
                    stack.extend(taller[m])
        order = sorted(names, key=lambda n: -len(below[n]))
        return order[0] if q["ask"] == "tallest" else order[-1]
    if kind == "travel_time":
        return F(q["d"] * 60, q["v"])
    if kind == "saving":
        return math.ceil(F(q["goal"], q["s"]))
    if kind == "bill_split":
        return F(Decimal(q["total"]) * (100 + q["tip"]) / 100 / q["people"])
    if kind == "boxes_needed":
        return math.ceil(F(q["n"], q["per"]))
    if kind == "fuel_cost":
        return F(q["d"], 100) * q["use"] * F(q["price"])
    if kind == "paint":
        return math.ceil(F(q["w"] * q["h"], q["cover"]))
    if kind == "timezone":
        t = datetime.datetime(2000, 1, 1) + datetime.timedelta(minutes=q["t"] + 60 * q["off"])
        return t.strftime("%H:%M")
    if kind == "sales_tax":
        return F(Decimal(q["price"]) * (100 + q["tax"]) / 100)
    raise KeyError(kind)


NUMBER = re.compile(r"-?\d+ \d+/\d+|-?\d+/\d+|-?\d+(?:\.\d+)?")


def numbers_in(answer: str) -> list:
    out = []
    for m in NUMBER.findall(answer.replace("$", "")):
        if " " in m:
            whole, part = m.split(" ")
            out.append(int(whole) + Fraction(part))
        else:
            out.append(Fraction(m))
    return out


def check_answer_text(p) -> None:
    """The answer as written says the value: its numbers, or its words."""
    v = p.value
    if p.kind == "percent_change":
        assert numbers_in(p.answer) == [abs(v)] and ("increase" in p.answer) == (v > 0)
    elif p.kind == "travel_time":
        h, m = numbers_in(p.answer)
        assert 60 * h + m == v
    elif p.kind == "density":
        assert numbers_in(p.answer) == [v[0]] and v[1] in p.answer
    elif isinstance(v, str):
        assert v in p.answer
    elif isinstance(v, tuple):
        assert numbers_in(p.answer) == list(v)
    else:
        assert numbers_in(p.answer) == [v]


@pytest.mark.parametrize("level", range(5))
def test_every_problem_kind_has_right_answers_at_every_level(level):
    rng = random.Random(level)
    for kind, make in g.KINDS.items():
        for _ in range(25):
            setting = rng.choice(g.SETTINGS)
            c = g.Ctx(rng, level, setting, *rng.sample(g.NAMES, 2))
            p = make(c)
            want = expected(kind, p.params)
            assert p.value == want, (kind, p.params, p.value, want)
            check_answer_text(p)
            assert g.check(p), (kind, p.params)


def test_fill_in_the_blank_answers_restore_a_fact():
    rng = random.Random(0)
    for topic in g.TOPICS:
        for _ in range(5):
            p = g.k_cloze(g.Ctx(rng, 0, g.SETTINGS[0], "A", "B"), topic)
            facts = [f.replace("[", "").replace("]", "") for f in topic.facts]
            assert p.statement.endswith(p.params["sentence"]) and "____" in p.statement
            assert p.params["sentence"].replace("____", p.answer, 1) in facts
            assert "[" not in p.statement


def wrong(p):
    """A value that differs from the answer: the next number, the other pack, the next day..."""
    v = p.value
    if isinstance(v, tuple):
        return (wrong(type(p)(p.kind, p.params, v[0], "", [], "")),) + v[1:]
    if isinstance(v, str):
        if p.kind == "logic_order":
            return next(n for pair in p.params["clues"] for n in pair if n != v)
        if ":" in v:  # a clock time
            return f"{(int(v[:2]) + 1) % 24:02d}{v[2:]}"
        swaps = {"A": "B", "B": "A", "yes": "no", "no": "yes"}
        return swaps.get(v) or g.WEEKDAYS[(g.WEEKDAYS.index(v) + 1) % 7]
    return v + 1


def test_a_wrong_answer_fails_its_check():
    # the checks are real: a wrong value of any kind makes them object
    rng = random.Random(1)
    for kind, make in g.KINDS.items():
        if kind in ("unit_convert", "order_ops", "ohm"):
            continue  # single table lookups or Python's own arithmetic: recomputed by the tests only
        for level in range(5):
            p = make(g.Ctx(rng, level, g.SETTINGS[0], "A", "B"))
            p.value = wrong(p)
            assert not g.check(p), (kind, p.params, p.value)


def sections(n: int, seed: int = 0, area=None) -> list:
    out, i = [], 0
    while len(out) < n:
        s = g.section(seed, i)
        i += 1
        if area is None or s.area == area:
            out.append(s)
    return out


def test_sections_state_every_problem_and_its_answer():
    secs = sections(300)
    assert {s.style for s in secs} == set(g.STYLES)
    assert {s.audience for s in secs} == {a.name for a in g.AUDIENCES}
    assert {s.area for s in secs} == {"math", "science", "everyday", "programming"}
    n = 0
    for s in secs:
        assert s.stats["problems_failed"] == 0 and s.stats["code_failed"] == 0
        if s.area != "programming":
            assert "[" not in s.text  # the key-term markup is never printed
        for p in s.problems:
            assert p.statement in s.text
            assert p.answer in s.text[s.text.index(p.statement):]  # the answer comes after the problem
            if p.kind not in ("cloze", "code_output"):
                assert p.value == expected(p.kind, p.params)
            n += 1
    assert n > 1000


ORACLES = {
    "sum_to_n": lambda n: sum(range(1, n + 1)),
    "sum_of_squares": lambda n: sum(i * i for i in range(n + 1)),
    "factorial": lambda n: math.prod(range(1, n + 1)),
    "fibonacci": lambda n: (lambda f: f(f, n))(lambda f, k: k if k < 2 else f(f, k - 1) + f(f, k - 2)),
    "is_prime": lambda n: n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1)),
    "gcd": lambda a, b: max(d for d in range(1, min(a, b) + 1) if a % d == 0 and b % d == 0),
    "count_vowels": lambda t: sum(t.lower().count(v) for v in "aeiou"),
    "reverse_string": lambda t: t[::-1],
    "is_palindrome": lambda t: (lambda s: s == s[::-1])("".join(t.lower().split())),
    "largest": max,
    "average": statistics.mean,
    "count_occurrences": lambda items, x: items.count(x),
    "unique": lambda items: list(dict.fromkeys(items)),
    "flatten": lambda nested: [x for inner in nested for x in inner],
    "word_count": lambda t: dict(__import__("collections").Counter(t.split())),
    "char_frequency": lambda t: dict(__import__("collections").Counter(ch for ch in t if ch.isalpha())),
    "celsius_to_fahrenheit": lambda c: c * 1.8 + 32,
    "fizzbuzz": lambda n: ["FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else str(i) for i in range(1, n + 1)],
    "digit_sum": lambda n: sum(int(d) for d in str(n)),
    "to_binary": lambda n: format(n, "b"),
    "second_largest": lambda xs: sorted(set(xs))[-2],
    "running_total": lambda xs: list(__import__("itertools").accumulate(xs)),
    "evens": lambda xs: [x for x in xs if x % 2 == 0],
    "squares": lambda n: [i * i for i in range(1, n + 1)],
    "merge_sorted": lambda a, b: sorted(a + b),
    "binary_search": lambda xs, t: xs.index(t) if t in xs else -1,
    "linear_search": lambda xs, t: xs.index(t) if t in xs else -1,
    "sort_numbers": sorted,
    "capitalize_words": lambda t: " ".join(w[:1].upper() + w[1:] for w in t.split()),
    "min_max": lambda xs: (min(xs), max(xs)),
    "is_anagram": lambda a, b: sorted(a.lower()) == sorted(b.lower()),
    "is_leap_year": lambda y: __import__("calendar").isleap(y),
    "triangle_number": lambda n: n * (n + 1) // 2,
    "collatz_steps": lambda n: 0 if n == 1 else 1 + ORACLES["collatz_steps"](n // 2 if n % 2 == 0 else 3 * n + 1),
    "count_words": lambda t: len(t.split()),
    "power": lambda b, e: b ** e,
    "primes_up_to": lambda n: [p for p in range(2, n + 1) if all(p % d for d in range(2, math.isqrt(p) + 1))],
    "product": lambda xs: math.prod(xs),
    "letter_grade": lambda s: "A" if s >= 90 else "B" if s >= 80 else "C" if s >= 70 else "D" if s >= 60 else "F",
    "count_digits": lambda n: len(str(n)),
}


def test_code_examples_pass_doctest_and_match_an_independent_oracle():
    assert set(ORACLES) == set(g.CODE_TASKS)
    secs = sections(120, area="programming")
    blocks = attempted = 0
    seen_tasks = set()
    for s in secs:
        for e in s.code:
            assert e.result == ORACLES[e.task](*e.args), (e.task, e.args, e.result)
            seen_tasks.add(e.task)
        for code in re.findall(r"```python\n(.*?)```", s.text, re.S):
            module = types.ModuleType("generated")
            exec(compile(code, "<generated>", "exec"), module.__dict__)
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            for test in doctest.DocTestFinder().find(module, "generated", globs=module.__dict__):
                runner.run(test)
            result = runner.summarize(verbose=False)
            assert result.failed == 0, code
            attempted += result.attempted
            blocks += 1
        for p in s.problems:
            if p.kind == "code_output":
                assert p.value == ORACLES[p.params["task"]](*p.params["args"])
    assert blocks >= 150 and attempted >= 250
    assert len(seen_tasks) >= 30


def test_sections_are_deterministic_for_a_seed_and_vary_with_it():
    a = [g.section(7, i).text for i in range(50)]
    assert a == [g.section(7, i).text for i in range(50)]
    assert a != [g.section(8, i).text for i in range(50)]
    assert len(set(a)) == 50


def test_there_are_hundreds_of_seed_topics_in_four_areas():
    topics = g.seed_topics()
    assert len(set(topics)) == len(topics) >= 2000
    assert len(g.TOPICS) >= 140 and len({t.title for t in g.TOPICS}) == len(g.TOPICS)
    areas = {a: sum(t.area == a for t in g.TOPICS) for a in ("math", "science", "everyday", "programming")}
    assert min(areas.values()) >= 20, areas
    for t in g.TOPICS:
        assert all("[" in f for f in t.facts), t.title  # every fact can become a fill-in-the-blank
        for k in t.kinds:
            assert k in (g.CODE_TASKS if t.area == "programming" else list(g.KINDS) + ["cloze"])
