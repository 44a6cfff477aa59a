"""
Offline synthetic textbooks: textbook-style sections written from templates, with no network and no
model, for building a corpus on any machine.

phi-1.5's synthetic textbooks were written by GPT-3.5 from ~20K seed topics (../shared/phi-facts.md);
Cosmopedia varies such prompts by audience and style. This module is the offline stand-in: each
section crosses a seed topic (a concept in a setting), an audience and a style, and holds

  - exposition: the concept's definition and facts, framed for the audience;
  - worked examples: a problem, the steps, and the answer, all computed here from the numbers drawn;
  - exercises, answered in a closing part;
  - for programming concepts, functions with a docstring and doctest examples. Each implementation is
    run on its examples and compared with an independent reference before the section is written.

Every worked answer is verified a second way (an inverse operation: substitute x back, multiply the
quotient back, ...); a problem that fails its check is left out and counted, so a bug here shows up
as a count in meta.json, never as a wrong answer in the corpus.

Section i is drawn from its own random stream, Random(f"{seed}:{i}"), so the corpus is the same
whatever the number of worker processes, and prepare_textbooks.py can stop at any token target.
"""

import builtins
import math
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable


# --------------------------------------------------------------------------------------------------
# Who the section is for, and how it is written

@dataclass(frozen=True)
class Audience:
    name: str
    level: int  # 0 (young children) .. 4 (professionals): sets the size of the numbers
    hooks: tuple  # openings; {t} is the topic, {s} the setting
    closings: tuple = ()  # last paragraphs; {f} is one of the topic's facts


AUDIENCES = (
    Audience("young children", 0, (
        "Have you ever wondered about {t}? Let's find out together, with a visit to {s}!",
        "Today we are going on a little adventure to learn about {t}.",
        "Let's learn about {t}! We will use a story from {s} to help us."), (
        "Great job! Remember: {f}", "You did it! Next time you are at {s}, think about {t}. {f}",
        "Here is the big idea to remember: {f} Can you explain it to a friend?")),
    Audience("middle school students", 1, (
        "In this section you will learn about {t} and practise it with problems from {s}.",
        "{T} comes up more often than you might think, for example at {s}.",
        "This lesson explains {t} step by step, then gives you a chance to try it yourself."), (
        "Key takeaway: {f}", "Before you move on, make sure you can say why this is true: {f}",
        "Remember: {f} Check each answer by working backwards.")),
    Audience("high school students", 2, (
        "This section develops the idea of {t} and applies it to situations such as {s}.",
        "Understanding {t} is a foundation for later work in science and mathematics.",
        "We study {t} through definitions, worked examples and practice problems."), (
        "Summary. {f} Practise until each step feels routine.", "In short: {f}",
        "The most important point of this section: {f} Always check an answer by a second method.")),
    Audience("college students", 3, (
        "We now turn to {t}, stating the key facts precisely and working through examples in detail.",
        "This section reviews {t} with an emphasis on method: each example shows every step.",
        "{T} is a tool used across many courses; here we set out the main ideas and apply them."), (
        "In summary, {f0} A good habit is to verify every result independently.",
        "To conclude: {f} The exercises above test exactly this.", "The essential fact to retain is this: {f}")),
    Audience("professionals", 4, (
        "This refresher covers {t}, with examples of the kind that come up at work, such as at {s}.",
        "A quick, practical review of {t}: the essentials, then worked cases you can adapt.",
        "{T} in practice: what to remember, how to compute it, and how to check the result."), (
        "Bottom line: {f}", "Rule of thumb: {f}",
        "Worth remembering at {s}: {f}")),
)

STYLES = ("textbook", "lecture notes", "tutorial", "dialogue", "story")


@dataclass(frozen=True)
class Setting:
    place: str
    items: tuple  # (singular, plural, lowest price, highest price) in dollars


SETTINGS = (
    Setting("a bakery", (("muffin", "muffins", 1, 4), ("loaf of bread", "loaves of bread", 2, 6), ("cookie", "cookies", 1, 3))),
    Setting("a school garden", (("tomato plant", "tomato plants", 2, 6), ("seed packet", "seed packets", 1, 4), ("flower pot", "flower pots", 3, 9))),
    Setting("a library", (("book", "books", 5, 25), ("bookmark", "bookmarks", 1, 3), ("magazine", "magazines", 3, 8))),
    Setting("a train journey", (("ticket", "tickets", 8, 40), ("sandwich", "sandwiches", 3, 8), ("bottle of water", "bottles of water", 1, 3))),
    Setting("a science fair", (("poster", "posters", 2, 10), ("battery", "batteries", 1, 5), ("magnet", "magnets", 2, 7))),
    Setting("a football season", (("match ticket", "match tickets", 10, 60), ("football", "footballs", 10, 30), ("team shirt", "team shirts", 15, 45))),
    Setting("a farm", (("egg", "eggs", 1, 2), ("apple", "apples", 1, 2), ("bale of hay", "bales of hay", 4, 12))),
    Setting("a family kitchen", (("jar of jam", "jars of jam", 2, 6), ("bag of flour", "bags of flour", 2, 5), ("carton of milk", "cartons of milk", 1, 4))),
    Setting("a bike workshop", (("tyre", "tyres", 15, 50), ("bike chain", "bike chains", 10, 35), ("bike light", "bike lights", 5, 25))),
    Setting("a camping trip", (("tent", "tents", 40, 200), ("flashlight", "flashlights", 5, 20), ("bag of marshmallows", "bags of marshmallows", 2, 5))),
    Setting("a music school", (("guitar string", "guitar strings", 2, 9), ("music book", "music books", 8, 25), ("drumstick", "drumsticks", 3, 12))),
    Setting("an art class", (("tube of paint", "tubes of paint", 2, 9), ("brush", "brushes", 1, 8), ("sketchbook", "sketchbooks", 4, 15))),
    Setting("a bookshop", (("novel", "novels", 8, 25), ("comic", "comics", 3, 10), ("atlas", "atlases", 15, 40))),
    Setting("a zoo", (("entry ticket", "entry tickets", 10, 30), ("animal poster", "animal posters", 2, 8), ("toy penguin", "toy penguins", 5, 15))),
    Setting("a space museum", (("rocket model", "rocket models", 10, 50), ("star map", "star maps", 3, 12), ("planet puzzle", "planet puzzles", 8, 20))),
    Setting("a coffee shop", (("coffee", "coffees", 2, 5), ("croissant", "croissants", 2, 4), ("pot of tea", "pots of tea", 2, 5))),
    Setting("a hardware store", (("box of nails", "boxes of nails", 3, 9), ("can of paint", "cans of paint", 12, 40), ("hammer", "hammers", 8, 25))),
    Setting("a birthday party", (("balloon", "balloons", 1, 2), ("cupcake", "cupcakes", 1, 4), ("party hat", "party hats", 1, 3))),
    Setting("a fruit market", (("orange", "oranges", 1, 2), ("melon", "melons", 2, 6), ("basket of berries", "baskets of berries", 3, 8))),
    Setting("a swimming club", (("pair of goggles", "pairs of goggles", 5, 20), ("towel", "towels", 6, 18), ("swim cap", "swim caps", 3, 10))),
)

NAMES = ("Ava", "Noah", "Mia", "Liam", "Zara", "Omar", "Priya", "Kenji", "Lucia", "Mateo", "Amara", "Chen",
         "Fatima", "Diego", "Hana", "Ivan", "Leila", "Kofi", "Sofia", "Arjun", "Nina", "Tariq", "Elena",
         "Yusuf", "Maya", "Jonas", "Aisha", "Ben", "Clara", "Dev", "Emma", "Felix", "Grace", "Hugo", "Isla",
         "Jamal", "Keira", "Leo", "Mei", "Nadia", "Oscar", "Paula", "Quinn", "Rosa", "Sami", "Tom", "Uma",
         "Victor", "Wen", "Yara")

# Number ranges by audience level: young children see small numbers, professionals large ones.
SCALE = (10, 40, 200, 1000, 5000)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# --------------------------------------------------------------------------------------------------
# Writing exact numbers

def num(x) -> str:
    """An exact number as text: 12, -3.75, or 7/3 when its decimal does not terminate."""
    x = Fraction(x)
    sign, x = ("-" if x < 0 else ""), abs(x)
    d, twos, fives = x.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"{sign}{x.numerator}/{x.denominator}"
    places = max(twos, fives)
    digits = str(x.numerator * 10 ** places // x.denominator)
    if places == 0:
        return sign + digits
    digits = digits.rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def money(x) -> str:
    cents = round_half_up(Fraction(x) * 100)
    return f"${cents // 100}.{cents % 100:02d}"


def mixed(x) -> str:
    """A fraction as a mixed number, the way recipes write it: 2 1/4."""
    x = Fraction(x)
    whole, rest = divmod(x.numerator, x.denominator)
    if rest == 0:
        return str(whole)
    part = f"{rest}/{x.denominator}"
    return f"{whole} {part}" if whole else part


def clock(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------------------------------
# Problems. Each kind draws its numbers from the audience level, writes a statement in the setting,
# solves it step by step, and says how to check the answer by another route.

@dataclass
class Problem:
    kind: str
    params: dict  # the numbers drawn: enough to recompute the answer
    value: object  # the answer: int, Fraction, str, or a tuple of them
    statement: str
    steps: list
    answer: str  # the answer as the text writes it


@dataclass
class Ctx:
    r: random.Random
    level: int
    setting: Setting
    name: str
    other: str

    def n(self, lo: int = 2, scale: tuple = SCALE) -> int:
        return self.r.randint(lo, max(lo + 1, scale[self.level]))

    def pick(self, options):
        return self.r.choice(options)

    def item(self):
        return self.r.choice(self.setting.items)

    def price(self, item) -> int:
        return self.r.randint(item[2], item[3])


PLACE_NAMES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")


def column_addition(a: int, b: int) -> list:
    steps, carry, i = [], 0, 0
    while a or b or carry:
        da, db = a % 10, b % 10
        s = da + db + carry
        extra = " + 1 carried" if carry else ""
        if a or b:
            tail = f", so we write {s % 10} and carry 1" if s >= 10 else ""
            steps.append(f"Add the {PLACE_NAMES[i]}: {da} + {db}{extra} = {s}{tail}.")
        else:
            steps.append(f"The carried 1 becomes the {PLACE_NAMES[i]} digit.")
        carry, a, b, i = s // 10, a // 10, b // 10, i + 1
    return steps


def k_add(c: Ctx) -> Problem:
    a, b = c.n(), c.n()
    one, many = c.item()[:2]
    st = c.pick((f"{c.name} has {a} {many} and gets {b} more. How many {many} does {c.name} have now?",
                 f"At {c.setting.place}, {a} {many} were sold in the morning and {b} in the afternoon. How many were sold in all?",
                 f"What is {a} + {b}?"))
    steps = (column_addition(a, b) if c.level <= 2 and max(a, b) >= 10 else []) + [f"{a} + {b} = {a + b}."]
    return Problem("add", dict(a=a, b=b), a + b, st, steps, str(a + b))


def k_sub(c: Ctx) -> Problem:
    a = c.n(10)
    b = c.r.randint(1, a - 1)
    one, many = c.item()[:2]
    st = c.pick((f"{c.name} had {a} {many} and gave {b} of them to {c.other}. How many are left?",
                 f"{c.setting.place.capitalize()} started the day with {a} {many} and sold {b}. How many remain?",
                 f"What is {a} - {b}?"))
    steps = [f"We take {b} away from {a}: {a} - {b} = {a - b}.",
             f"Check by adding back: {a - b} + {b} = {a}."]
    return Problem("sub", dict(a=a, b=b), a - b, st, steps, str(a - b))


def k_mul(c: Ctx) -> Problem:
    a = c.r.randint(2, (5, 12, 25, 60, 150)[c.level])
    b = c.r.randint(2, (5, 12, 30, 99, 400)[c.level])
    one, many = c.item()[:2]
    st = c.pick((f"There are {a} boxes at {c.setting.place}, and each box holds {b} {many}. How many {many} are there in total?",
                 f"{c.name} buys {a} packs with {b} {many} in each pack. How many {many} is that?",
                 f"Compute {a} × {b}."))
    steps = [f"{a} groups of {b} is {a} × {b}.", f"{a} × {b} = {a * b}."]
    if c.level <= 1:
        steps.insert(1, "As repeated addition: " + " + ".join([str(b)] * a) + f" = {a * b}." if a <= 6 else
                     f"We can split it: {a} × {b} = {a - a // 2} × {b} + {a // 2} × {b} = {(a - a // 2) * b} + {(a // 2) * b}.")
    return Problem("mul", dict(a=a, b=b), a * b, st, steps, str(a * b))


def k_divrem(c: Ctx) -> Problem:
    b = c.r.randint(2, (5, 9, 12, 25, 60)[c.level])
    q = c.r.randint(2, (6, 12, 40, 120, 300)[c.level])
    rem = c.r.randint(0, b - 1)
    a = b * q + rem
    one, many = c.item()[:2]
    st = c.pick((f"{a} {many} are shared equally among {b} friends. How many does each friend get, and how many are left over?",
                 f"{c.name} packs {a} {many} into bags of {b}. How many full bags are there, and how many {many} are left?",
                 f"Divide {a} by {b} and give the quotient and the remainder."))
    steps = [f"The largest multiple of {b} that is not more than {a} is {b} × {q} = {b * q}.",
             f"The remainder is {a} - {b * q} = {rem}, which is smaller than {b}.",
             f"Check: {b} × {q} + {rem} = {a}."]
    ans = f"{q} remainder {rem}" if rem else f"{q} remainder 0"
    return Problem("divrem", dict(a=a, b=b), (q, rem), st, steps, ans)


def k_frac_add(c: Ctx) -> Problem:
    dens = (2, 3, 4, 5, 6, 8, 10, 12)
    b, d = c.pick(dens), c.pick(dens)
    a, cc = c.r.randint(1, b - 1), c.r.randint(1, d - 1)
    m = b * d // math.gcd(b, d)
    total = Fraction(a, b) + Fraction(cc, d)
    raw = a * (m // b) + cc * (m // d)
    st = c.pick((f"{c.name} ate {a}/{b} of a pizza and {c.other} ate {cc}/{d} of another pizza of the same size. How much pizza did they eat together?",
                 f"Add {a}/{b} + {cc}/{d} and write the result in simplest form.",
                 f"A recipe at {c.setting.place} needs {a}/{b} cup of sugar and then {cc}/{d} cup more. How much sugar is that in total?"))
    steps = [f"The least common multiple of {b} and {d} is {m}.",
             f"{a}/{b} = {a * (m // b)}/{m} and {cc}/{d} = {cc * (m // d)}/{m}.",
             f"{a * (m // b)}/{m} + {cc * (m // d)}/{m} = {raw}/{m}."]
    if Fraction(raw, m).denominator != m:
        g = math.gcd(raw, m)
        steps.append(f"Divide the top and bottom by {g}: {raw}/{m} = {num(total)}.")
    return Problem("frac_add", dict(a=a, b=b, c=cc, d=d), total, st, steps, num(total))


def k_frac_mul(c: Ctx) -> Problem:
    dens = (2, 3, 4, 5, 6, 8, 10)
    b, d = c.pick(dens), c.pick(dens)
    a, cc = c.r.randint(1, b - 1), c.r.randint(1, d - 1)
    v = Fraction(a, b) * Fraction(cc, d)
    st = c.pick((f"What is {a}/{b} of {cc}/{d}?", f"Multiply {a}/{b} × {cc}/{d}.",
                 f"{c.name} has {cc}/{d} of a cake and gives {a}/{b} of it to {c.other}. What fraction of the whole cake does {c.other} get?"))
    steps = [f"Multiply the numerators: {a} × {cc} = {a * cc}.", f"Multiply the denominators: {b} × {d} = {b * d}.",
             f"{a * cc}/{b * d} in simplest form is {num(v)}."]
    return Problem("frac_mul", dict(a=a, b=b, c=cc, d=d), v, st, steps, num(v))


def k_frac_simplify(c: Ctx) -> Problem:
    q = c.r.randint(2, (6, 10, 16, 25, 40)[c.level])
    p = c.r.randint(1, q - 1)
    while math.gcd(p, q) != 1:
        p = c.r.randint(1, q - 1)
    k = c.r.randint(2, (4, 6, 9, 12, 20)[c.level])
    st = c.pick((f"Simplify the fraction {p * k}/{q * k}.", f"Write {p * k}/{q * k} in simplest form.",
                 f"{c.name} answered {p * k} out of {q * k} questions correctly. Write this as a fraction in simplest form."))
    steps = [f"The greatest common divisor of {p * k} and {q * k} is {k}.",
             f"{p * k} ÷ {k} = {p} and {q * k} ÷ {k} = {q}, so the fraction is {p}/{q}."]
    return Problem("frac_simplify", dict(n=p * k, d=q * k), Fraction(p, q), st, steps, f"{p}/{q}")


def k_percent_of(c: Ctx) -> Problem:
    p = c.pick((10, 20, 25, 50) if c.level == 0 else (5, 10, 12, 15, 20, 25, 30, 40, 45, 60, 75, 80))
    n = 20 * c.r.randint(1, (5, 10, 25, 100, 250)[c.level])
    v = Fraction(p * n, 100)
    one, many = c.item()[:2]
    st = c.pick((f"What is {p}% of {n}?", f"{c.setting.place.capitalize()} has {n} {many}, and {p}% of them are sold by noon. How many {many} is that?",
                 f"A survey of {n} people at {c.setting.place} found that {p}% liked the new menu. How many people is that?"))
    steps = [f"{p}% means {p} out of every 100, so we compute {p}/100 × {n}.", f"{p} × {n} = {p * n}, and {p * n} ÷ 100 = {num(v)}."]
    return Problem("percent_of", dict(p=p, n=n), v, st, steps, num(v))


def k_discount(c: Ctx) -> Problem:
    item = c.item()
    price = c.r.randint(max(item[2], 2), item[3]) * c.pick((1, 1, 2, 5))
    d = c.pick((10, 15, 20, 25, 30, 40, 50))
    off = Fraction(price * d, 100)
    final = price - off
    st = c.pick((f"A {item[0]} at {c.setting.place} costs {money(price)}. It is on sale for {d}% off. What is the sale price?",
                 f"{c.name} wants a {item[0]} priced at {money(price)}. With a {d}% discount, how much will it cost?"))
    steps = [f"The discount is {d}% of {money(price)}: {d}/100 × {price} = {money(off)}.",
             f"The sale price is {money(price)} - {money(off)} = {money(final)}.",
             f"Another way: paying {100 - d}% of the price gives {100 - d}/100 × {price} = {money(final)}."]
    return Problem("discount", dict(price=price, d=d), final, st, steps, money(final))


def k_percent_change(c: Ctx) -> Problem:
    old = 20 * c.r.randint(1, (5, 10, 50, 200, 500)[c.level])
    pct = 5 * c.r.randint(1, 12)
    up = c.r.random() < 0.5 or pct >= 100
    new = old * (100 + pct) // 100 if up else old * (100 - pct) // 100
    word = "increase" if up else "decrease"
    one, many = c.item()[:2]
    st = c.pick((f"Last month {c.setting.place} sold {old} {many}; this month it sold {new}. What is the percent change?",
                 f"A price changed from {old} cents to {new} cents. By what percent did it change?"))
    steps = [f"The change is {new} - {old} = {new - old}.", f"Divide by the original amount: {new - old}/{old} = {num(Fraction(new - old, old))}.",
             f"Multiply by 100: a {pct}% {word}."]
    return Problem("percent_change", dict(old=old, new=new), Fraction(100 * (new - old), old), st, steps, f"{pct}% {word}")


def k_ratio_share(c: Ctx) -> Problem:
    a, b = c.r.randint(1, 7), c.r.randint(1, 7)
    while a == b:
        b = c.r.randint(1, 7)
    k = c.r.randint(2, (5, 12, 40, 150, 500)[c.level])
    total = (a + b) * k
    one, many = c.item()[:2]
    st = c.pick((f"{c.name} and {c.other} share {total} {many} in the ratio {a}:{b}. How many does each get?",
                 f"Split {total} in the ratio {a}:{b}."))
    steps = [f"The ratio has {a} + {b} = {a + b} parts.", f"One part is {total} ÷ {a + b} = {k}.",
             f"So the shares are {a} × {k} = {a * k} and {b} × {k} = {b * k}.", f"Check: {a * k} + {b * k} = {total}."]
    return Problem("ratio_share", dict(total=total, a=a, b=b), (a * k, b * k), st, steps, f"{a * k} and {b * k}")


def k_linear_eq(c: Ctx) -> Problem:
    a = c.r.randint(2, (4, 9, 12, 20, 40)[c.level])
    x = c.r.randint(1, (10, 20, 50, 100, 300)[c.level]) * (c.pick((1, -1)) if c.level >= 2 else 1)
    b = c.r.randint(1, (10, 30, 100, 500, 1000)[c.level]) * (c.pick((1, -1)) if c.level >= 2 else 1)
    rhs = a * x + b
    sign = "+" if b >= 0 else "-"
    st = c.pick((f"Solve {a}x {sign} {abs(b)} = {rhs}.", f"Find x if {a}x {sign} {abs(b)} = {rhs}.",
                 f"{c.name} thinks of a number, multiplies it by {a} and then {'adds' if b >= 0 else 'subtracts'} {abs(b)}. The result is {rhs}. What was the number?"))
    steps = [f"{'Subtract' if b >= 0 else 'Add'} {abs(b)} on both sides: {a}x = {rhs - b}.",
             f"Divide both sides by {a}: x = {rhs - b} ÷ {a} = {x}.", f"Check: {a} × {x} {sign} {abs(b)} = {rhs}."]
    return Problem("linear_eq", dict(a=a, b=b, c=rhs), x, st, steps, f"x = {x}")


def k_rect(c: Ctx) -> Problem:
    w, h = c.n(2, (10, 20, 60, 200, 500)), c.n(2, (10, 20, 60, 200, 500))
    unit = c.pick(("m", "cm"))
    st = c.pick((f"A rectangular garden at {c.setting.place} is {w} {unit} long and {h} {unit} wide. Find its area and its perimeter.",
                 f"Find the area and perimeter of a rectangle with sides {w} {unit} and {h} {unit}."))
    steps = [f"Area = length × width = {w} × {h} = {w * h} square {unit}.",
             f"Perimeter = 2 × (length + width) = 2 × ({w} + {h}) = {2 * (w + h)} {unit}."]
    return Problem("rect", dict(w=w, h=h), (w * h, 2 * (w + h)), st, steps, f"area {w * h} square {unit}, perimeter {2 * (w + h)} {unit}")


def k_triangle(c: Ctx) -> Problem:
    b, h = c.n(2, (12, 20, 60, 200, 500)), c.n(2, (12, 20, 60, 200, 500))
    v = Fraction(b * h, 2)
    st = c.pick((f"A triangle has a base of {b} cm and a height of {h} cm. What is its area?",
                 f"Find the area of a triangular sail with base {b} m and height {h} m."))
    steps = ["Area = 1/2 × base × height.", f"1/2 × {b} × {h} = {b * h} ÷ 2 = {num(v)}."]
    return Problem("triangle", dict(b=b, h=h), v, st, steps, num(v))


PI = Fraction(314, 100)


def k_circle(c: Ctx) -> Problem:
    r = c.n(1, (5, 10, 30, 100, 250))
    circ, area = 2 * PI * r, PI * r * r
    st = c.pick((f"A round table has a radius of {r} dm. Using π ≈ 3.14, find its circumference and its area.",
                 f"Using π ≈ 3.14, find the circumference and area of a circle with radius {r} cm."))
    steps = [f"Circumference = 2 × π × r ≈ 2 × 3.14 × {r} = {num(circ)}.", f"Area = π × r × r ≈ 3.14 × {r} × {r} = {num(area)}."]
    return Problem("circle", dict(r=r), (circ, area), st, steps, f"circumference {num(circ)}, area {num(area)}")


TRIPLES = ((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (9, 40, 41))


def k_pythagoras(c: Ctx) -> Problem:
    a, b, h = c.pick(TRIPLES[:2] if c.level < 2 else TRIPLES)
    k = c.r.randint(1, (2, 3, 5, 10, 20)[c.level])
    a, b, h = a * k, b * k, h * k
    if c.r.random() < 0.6:
        st = c.pick((f"A right triangle has legs {a} and {b}. How long is the hypotenuse?",
                     f"A ladder reaches {b} m up a wall and its foot is {a} m from the wall. How long is the ladder?"))
        steps = [f"By the Pythagorean theorem, c² = a² + b² = {a * a} + {b * b} = {h * h}.", f"c = √{h * h} = {h}."]
        return Problem("pythagoras", dict(a=a, b=b), h, st, steps, str(h))
    st = f"A right triangle has hypotenuse {h} and one leg {a}. How long is the other leg?"
    steps = [f"b² = c² - a² = {h * h} - {a * a} = {b * b}.", f"b = √{b * b} = {b}."]
    return Problem("pythagoras", dict(c=h, a=a), b, st, steps, str(b))


def k_mean_median(c: Ctx) -> Problem:
    k = c.r.randint(5, 7)
    top = (10, 30, 100, 500, 2000)[c.level]
    xs = [c.r.randint(1, top) for _ in range(k)]
    xs[-1] += (-sum(xs)) % k  # make the mean a whole number
    mean = Fraction(sum(xs), k)
    s = sorted(xs)
    med = Fraction(s[k // 2]) if k % 2 else Fraction(s[k // 2 - 1] + s[k // 2], 2)
    data = ", ".join(map(str, xs))
    st = c.pick((f"The scores of {k} players were {data}. Find the mean and the median.",
                 f"Find the mean and median of {data}.",
                 f"On {k} days, {c.setting.place} had these numbers of visitors: {data}. What are the mean and the median?"))
    steps = [f"The sum is {sum(xs)}, and there are {k} values, so the mean is {sum(xs)} ÷ {k} = {num(mean)}.",
             f"In order: {', '.join(map(str, s))}.",
             f"The middle value is {num(med)}." if k % 2 else f"The two middle values are {s[k // 2 - 1]} and {s[k // 2]}, so the median is {num(med)}."]
    return Problem("mean_median", dict(xs=xs), (mean, med), st, steps, f"mean {num(mean)}, median {num(med)}")


def k_probability(c: Ctx) -> Problem:
    colors = ("red", "blue", "green", "yellow")
    counts = {col: c.r.randint(1, (5, 9, 15, 30, 60)[c.level]) for col in colors[:c.r.randint(2, 4)]}
    target = c.pick(tuple(counts))
    total = sum(counts.values())
    negate = c.level >= 2 and c.r.random() < 0.4
    fav = total - counts[target] if negate else counts[target]
    p = Fraction(fav, total)
    bag = ", ".join(f"{n} {col}" for col, n in counts.items())
    what = f"not {target}" if negate else target
    st = f"A bag holds {bag} marbles. {c.name} takes one without looking. What is the probability that it is {what}?"
    steps = [f"There are {total} marbles in all.",
             f"{fav} of them are {what}." if not negate else f"{counts[target]} are {target}, so {total} - {counts[target]} = {fav} are not.",
             f"The probability is {fav}/{total} = {num(p)}."]
    return Problem("probability", dict(counts=counts, target=target, negate=negate), p, st, steps, num(p))


def k_gcd_lcm(c: Ctx) -> Problem:
    g = c.r.randint(2, (4, 8, 15, 30, 60)[c.level])
    a, b = g * c.r.randint(2, 12), g * c.r.randint(2, 12)
    while a == b:
        b = g * c.r.randint(2, 12)
    gcd, lcm = math.gcd(a, b), a * b // math.gcd(a, b)
    st = c.pick((f"Find the greatest common divisor and the least common multiple of {a} and {b}.",
                 f"Two buses leave {c.setting.place} every {a} and every {b} minutes. What is the GCD of {a} and {b}, and after how many minutes do they next leave together?"))
    steps, x, y = [], max(a, b), min(a, b)
    while y:
        steps.append(f"{x} = {x // y} × {y} + {x % y}.")
        x, y = y, x % y
    steps += [f"The last non-zero remainder gives GCD = {gcd}.", f"LCM = {a} × {b} ÷ {gcd} = {lcm}."]
    return Problem("gcd_lcm", dict(a=a, b=b), (gcd, lcm), st, steps, f"GCD {gcd}, LCM {lcm}")


def k_prime_factors(c: Ctx) -> Problem:
    primes = (2, 3, 5, 7, 11, 13)
    fs = sorted(c.pick(primes[:3 + min(c.level, 3)]) for _ in range(c.r.randint(2, 3 + min(c.level, 2))))
    n = math.prod(fs)
    st = c.pick((f"Write {n} as a product of prime numbers.", f"Find the prime factorization of {n}."))
    steps, m = [], n
    for p in fs:
        steps.append(f"{m} ÷ {p} = {m // p}.")
        m //= p
    ans = " × ".join(map(str, fs))
    steps.append(f"So {n} = {ans}.")
    return Problem("prime_factors", dict(n=n), tuple(fs), st, steps, ans)


def k_power(c: Ctx) -> Problem:
    a = c.r.randint(2, (3, 5, 9, 12, 20)[c.level])
    e = c.r.randint(2, (3, 4, 5, 6, 6)[c.level])
    st = c.pick((f"Compute {a}^{e}.", f"What is {a} to the power {e}?"))
    partial, steps = a, []
    for i in range(2, e + 1):
        steps.append(f"{partial} × {a} = {partial * a}.")
        partial *= a
    return Problem("power", dict(a=a, e=e), a ** e, st, [f"{a}^{e} means {e} factors of {a} multiplied together."] + steps, str(a ** e))


def k_arith_seq(c: Ctx) -> Problem:
    a1, d = c.r.randint(1, SCALE[c.level]), c.r.randint(1, (3, 6, 15, 40, 100)[c.level])
    n = c.r.randint(5, (8, 15, 30, 60, 100)[c.level])
    terms = ", ".join(str(a1 + i * d) for i in range(4))
    v = a1 + (n - 1) * d
    st = c.pick((f"The sequence {terms}, ... goes up by the same amount each time. What is term number {n}?",
                 f"{c.name} saves {a1} coins in the first week and {d} more each week than the week before. How many coins does {c.name} save in week {n}?"))
    steps = [f"The first term is {a1} and the common difference is {d}.", "Term n = first + (n - 1) × difference.",
             f"Term {n} = {a1} + {n - 1} × {d} = {v}."]
    return Problem("arith_seq", dict(a1=a1, d=d, n=n), v, st, steps, str(v))


UNITS = (("km", "m", 1000), ("m", "cm", 100), ("kg", "g", 1000), ("L", "mL", 1000), ("h", "min", 60), ("min", "s", 60), ("cm", "mm", 10))


def k_unit_convert(c: Ctx) -> Problem:
    big, small, f = c.pick(UNITS)
    if c.r.random() < 0.5:
        x = c.r.randint(1, (10, 50, 200, 900, 5000)[c.level])
        st = f"Convert {x} {big} to {small}."
        steps = [f"1 {big} = {f} {small}.", f"{x} × {f} = {x * f}, so {x} {big} = {x * f} {small}."]
        return Problem("unit_convert", dict(x=x, frm=big, to=small), x * f, st, steps, f"{x * f} {small}")
    x = f * c.r.randint(1, (10, 40, 100, 300, 900)[c.level]) // c.pick((1, 2, 4, 5))
    v = Fraction(x, f)
    st = f"Convert {x} {small} to {big}."
    steps = [f"1 {big} = {f} {small}, so we divide by {f}.", f"{x} ÷ {f} = {num(v)}, so {x} {small} = {num(v)} {big}."]
    return Problem("unit_convert", dict(x=x, frm=small, to=big), v, st, steps, f"{num(v)} {big}")


def k_simple_interest(c: Ctx) -> Problem:
    p = 100 * c.r.randint(1, (5, 20, 50, 200, 1000)[c.level])
    rate, t = c.r.randint(1, 9), c.r.randint(1, 6)
    i = Fraction(p * rate * t, 100)
    st = f"{c.name} puts {money(p)} in a savings account that pays {rate}% simple interest per year. How much interest is earned in {t} years, and what is the total?"
    steps = [f"Interest = principal × rate × time = {p} × {rate}/100 × {t} = {money(i)}.", f"Total = {money(p)} + {money(i)} = {money(p + i)}."]
    return Problem("simple_interest", dict(p=p, rate=rate, t=t), (i, p + i), st, steps, f"interest {money(i)}, total {money(p + i)}")


def k_compound_interest(c: Ctx) -> Problem:
    p = 100 * c.r.randint(1, (5, 20, 50, 200, 500)[c.level])
    rate, t = c.pick((2, 3, 4, 5, 6, 8, 10)), c.r.randint(2, 5)
    exact = p * Fraction(100 + rate, 100) ** t
    v = Fraction(round_half_up(exact * 100), 100)
    st = f"{money(p)} is invested at {rate}% interest compounded once a year. What is it worth after {t} years, to the nearest cent?"
    steps, bal = [], Fraction(p)
    for year in range(1, t + 1):
        bal *= Fraction(100 + rate, 100)
        steps.append(f"After year {year}: {num(bal)}.")
    steps.append(f"Rounded to the nearest cent: {money(v)}.")
    return Problem("compound_interest", dict(p=p, rate=rate, t=t), v, st,
                   [f"Each year the amount is multiplied by 1 + {rate}/100 = {num(Fraction(100 + rate, 100))}."] + steps, money(v))


def k_elapsed_time(c: Ctx) -> Problem:
    start = c.r.randint(6 * 60, 20 * 60) // 5 * 5
    dur = c.r.randint(1, 12) * 5 + 60 * c.r.randint(0, 5)
    end = start + dur
    st = c.pick((f"A trip from {c.setting.place} starts at {clock(start)} and lasts {dur // 60} h {dur % 60} min. When does it end?",
                 f"{c.name} starts baking at {clock(start)}. It takes {dur // 60} hours and {dur % 60} minutes. At what time is it done?"))
    steps = [f"{clock(start)} plus {dur // 60} hours is {clock(start + 60 * (dur // 60))}.",
             f"Adding {dur % 60} more minutes gives {clock(end)}."]
    return Problem("elapsed_time", dict(start=start, dur=dur), clock(end), st, steps, clock(end))


def k_weekday(c: Ctx) -> Problem:
    d0 = c.r.randint(0, 6)
    n = c.r.randint(3, (14, 30, 100, 365, 1000)[c.level])
    v = WEEKDAYS[(d0 + n) % 7]
    st = c.pick((f"Today is {WEEKDAYS[d0]}. What day of the week will it be in {n} days?",
                 f"{c.name}'s trip to {c.setting.place} is {n} days after a {WEEKDAYS[d0]}. On which day of the week is it?"))
    steps = [f"The days repeat every 7, so only the remainder of {n} ÷ 7 matters.", f"{n} = 7 × {n // 7} + {n % 7}.",
             f"{n % 7} days after {WEEKDAYS[d0]} is {v}."]
    return Problem("weekday", dict(d0=d0, n=n), v, st, steps, v)


def k_order_ops(c: Ctx) -> Problem:
    a, b, cc, d = (c.r.randint(1, (9, 12, 20, 50, 99)[c.level]) for _ in range(4))
    form = c.r.randint(0, 2)
    if form == 0:
        expr, v, steps = f"{a} + {b} × {cc} - {d}", a + b * cc - d, [f"Multiply first: {b} × {cc} = {b * cc}.", f"Then left to right: {a} + {b * cc} - {d} = {a + b * cc - d}."]
    elif form == 1:
        expr, v, steps = f"({a} + {b}) × {cc} - {d}", (a + b) * cc - d, [f"Brackets first: {a} + {b} = {a + b}.", f"Then multiply: {a + b} × {cc} = {(a + b) * cc}.", f"Then subtract: {(a + b) * cc} - {d} = {(a + b) * cc - d}."]
    else:
        expr, v, steps = f"{a} × {b} + {cc} × {d}", a * b + cc * d, [f"Do both multiplications: {a} × {b} = {a * b} and {cc} × {d} = {cc * d}.", f"Then add: {a * b} + {cc * d} = {a * b + cc * d}."]
    return Problem("order_ops", dict(expr=expr), v, f"Evaluate {expr}.", steps, str(v))


def k_rounding(c: Ctx) -> Problem:
    to = c.pick((10, 100) if c.level < 2 else (10, 100, 1000))
    n = c.r.randint(to, to * (20 if c.level < 3 else 200))
    v = round_half_up(Fraction(n, to)) * to
    low = n // to * to
    st = c.pick((f"Round {n} to the nearest {to}.", f"About {n} people visited {c.setting.place}. Round this to the nearest {to}."))
    steps = [f"{n} lies between {low} and {low + to}.", f"The halfway point is {low + to // 2}; {n} is {'at or above' if n >= low + to // 2 else 'below'} it, so we round {'up' if v > low else 'down'} to {v}."]
    return Problem("rounding", dict(n=n, to=to), v, st, steps, str(v))


def k_sqrt(c: Ctx) -> Problem:
    k = c.r.randint(2, (10, 15, 30, 60, 120)[c.level])
    st = c.pick((f"What is the square root of {k * k}?", f"A square field has an area of {k * k} square metres. How long is each side?"))
    steps = [f"We need a number that times itself gives {k * k}.", f"{k} × {k} = {k * k}, so the answer is {k}."]
    return Problem("sqrt", dict(n=k * k), k, st, steps, str(k))


def k_box_volume(c: Ctx) -> Problem:
    l, w, h = (c.n(1, (6, 12, 30, 80, 200)) for _ in range(3))
    st = f"A box is {l} cm long, {w} cm wide and {h} cm high. What is its volume?"
    steps = ["Volume = length × width × height.", f"{l} × {w} = {l * w}, and {l * w} × {h} = {l * w * h} cubic centimetres."]
    return Problem("box_volume", dict(l=l, w=w, h=h), l * w * h, st, steps, f"{l * w * h} cubic centimetres")


def k_triangle_angles(c: Ctx) -> Problem:
    a = c.r.randint(20, 100)
    b = c.r.randint(10, 170 - a)
    v = 180 - a - b
    st = f"Two angles of a triangle measure {a}° and {b}°. What is the third angle?"
    steps = ["The angles of a triangle add up to 180°.", f"{a} + {b} = {a + b}, and 180 - {a + b} = {v}."]
    return Problem("triangle_angles", dict(a=a, b=b), v, st, steps, f"{v}°")


def k_factors(c: Ctx) -> Problem:
    n = c.r.randint(6, (30, 60, 100, 150, 200)[c.level])
    fs = tuple(d for d in range(1, n + 1) if n % d == 0)
    pairs = [f"{d} × {n // d}" for d in fs if d * d <= n]
    st = c.pick((f"List all the factors of {n}.", f"{c.name} wants to arrange {n} chairs in equal rows. List every possible number of chairs per row."))
    steps = [f"Look for pairs that multiply to {n}: " + ", ".join(pairs) + ".", "Write each number in the pairs in order."]
    return Problem("factors", dict(n=n), fs, st, steps, ", ".join(map(str, fs)))


def k_decimal_add(c: Ctx) -> Problem:
    a, b = Fraction(c.r.randint(1, 100 * SCALE[c.level]), 100), Fraction(c.r.randint(1, 100 * SCALE[c.level]), 100)
    st = c.pick((f"Add {num(a)} and {num(b)}.", f"{c.name} buys something for {money(a)} and something else for {money(b)}. What is the total?"))
    steps = ["Line up the decimal points and add as with whole numbers.", f"{num(a)} + {num(b)} = {num(a + b)}."]
    return Problem("decimal_add", dict(a=str(a), b=str(b)), a + b, st, steps, num(a + b))


def k_neg_add(c: Ctx) -> Problem:
    t = c.r.randint(-10, 15)
    d = c.r.randint(-25, 25)
    while d == 0:
        d = c.r.randint(-25, 25)
    v = t + d
    st = f"The temperature at {c.setting.place} was {t}°C in the morning and then {'rose' if d > 0 else 'fell'} by {abs(d)} degrees. What was the new temperature?"
    steps = [f"A {'rise' if d > 0 else 'fall'} of {abs(d)} means {'adding' if d > 0 else 'subtracting'} {abs(d)}.",
             f"{t} {'+' if d > 0 else '-'} {abs(d)} = {v}."]
    return Problem("neg_add", dict(t=t, d=d), v, st, steps, f"{v}°C")


def k_combos(c: Ctx) -> Problem:
    a, b, d = c.r.randint(2, 6), c.r.randint(2, 6), c.r.randint(1, 4)
    v = a * b * d
    st = f"{c.name} has {a} shirts, {b} pairs of trousers and {d} pairs of shoes. How many different outfits can {c.name} make?"
    steps = ["By the multiplication principle, multiply the number of choices for each part.", f"{a} × {b} × {d} = {v}."]
    return Problem("combos", dict(a=a, b=b, d=d), v, st, steps, str(v))


def k_polygon(c: Ctx) -> Problem:
    sides = c.pick(((3, "triangle"), (4, "square"), (5, "pentagon"), (6, "hexagon"), (8, "octagon")))
    s = c.r.randint(2, (10, 20, 50, 100, 300)[c.level])
    v = sides[0] * s
    st = f"A regular {sides[1]} has sides of {s} cm. What is its perimeter?"
    steps = [f"A {sides[1]} has {sides[0]} equal sides.", f"{sides[0]} × {s} = {v} cm."]
    return Problem("polygon", dict(sides=sides[0], s=s), v, st, steps, f"{v} cm")


def k_divisibility(c: Ctx) -> Problem:
    n = c.r.randint(100, 10 ** (3 + min(c.level, 3)))
    digits = sum(map(int, str(n)))
    v = "yes" if n % 3 == 0 else "no"
    st = f"Is {n} divisible by 3?"
    steps = ["A number is divisible by 3 exactly when the sum of its digits is.", f"The digits of {n} add up to {digits}.",
             f"{digits} is {'' if digits % 3 == 0 else 'not '}divisible by 3, so the answer is {v}."]
    return Problem("divisibility", dict(n=n), v, st, steps, v)


def k_doubling(c: Ctx) -> Problem:
    n0, k = c.r.randint(2, (10, 50, 200, 1000, 5000)[c.level]), c.r.randint(1, 6)
    times = c.r.randint(2, 6)
    v = n0 * 2 ** times
    st = f"A culture starts with {n0} bacteria, and the number doubles every {k} hours. How many bacteria are there after {k * times} hours?"
    steps = [f"{k * times} hours is {times} doubling periods of {k} hours.", f"{n0} × 2^{times} = {n0} × {2 ** times} = {v}."]
    return Problem("doubling", dict(n0=n0, k=k, t=k * times), v, st, steps, str(v))


# Science. Quantities are chosen so that every answer is exact.

PLANETS = (("Mercury", "3.7"), ("Venus", "8.9"), ("Earth", "9.8"), ("the Moon", "1.6"), ("Mars", "3.7"),
           ("Jupiter", "24.8"), ("Saturn", "10.4"), ("Uranus", "8.7"), ("Neptune", "11.2"))
MATERIALS = (("cork", "0.24"), ("ice", "0.92"), ("water", "1"), ("aluminium", "2.7"), ("iron", "7.9"), ("copper", "8.96"),
             ("silver", "10.5"), ("lead", "11.3"), ("gold", "19.3"))  # grams per cubic centimetre, at room temperature
MOLAR_MASSES = (("water", "H2O", 18), ("carbon dioxide", "CO2", 44), ("sodium chloride", "NaCl", "58.5"), ("methane", "CH4", 16),
                ("oxygen gas", "O2", 32), ("glucose", "C6H12O6", 180), ("ammonia", "NH3", 17), ("calcium carbonate", "CaCO3", 100))
SPECIFIC_HEATS = (("water", "4.18"), ("aluminium", "0.9"), ("iron", "0.45"), ("copper", "0.385"))  # J per gram per °C


def k_speed(c: Ctx) -> Problem:
    v = c.r.randint(2, (10, 30, 90, 120, 300)[c.level])
    t = c.r.randint(1, 8)
    d = v * t
    st = c.pick((f"A cyclist travels {d} km in {t} hours. What is the average speed?",
                 f"A train from {c.setting.place} covers {d} km in {t} h. Find its average speed."))
    steps = ["Average speed = distance ÷ time.", f"{d} ÷ {t} = {v} km/h.", f"Check: {v} km/h × {t} h = {d} km."]
    return Problem("speed", dict(d=d, t=t), v, st, steps, f"{v} km/h")


def k_acceleration(c: Ctx) -> Problem:
    a, t = c.r.randint(1, 6), c.r.randint(2, 10)
    u = c.r.randint(0, 20)
    w = u + a * t
    st = f"A car speeds up from {u} m/s to {w} m/s in {t} s. What is its acceleration?"
    steps = ["Acceleration = change in velocity ÷ time.", f"({w} - {u}) ÷ {t} = {w - u} ÷ {t} = {a} m/s²."]
    return Problem("acceleration", dict(u=u, v=w, t=t), a, st, steps, f"{a} m/s²")


def k_force(c: Ctx) -> Problem:
    m, a = c.r.randint(1, (10, 50, 200, 1500, 3000)[c.level]), Fraction(c.r.randint(1, 20), 2)
    f = m * a
    st = c.pick((f"What force is needed to give a {m} kg cart an acceleration of {num(a)} m/s²?",
                 f"A {m} kg object accelerates at {num(a)} m/s². What is the net force on it?"))
    steps = ["Newton's second law: F = m × a.", f"F = {m} × {num(a)} = {num(f)} N."]
    return Problem("force", dict(m=m, a=str(a)), f, st, steps, f"{num(f)} N")


def k_momentum(c: Ctx) -> Problem:
    m, v = c.r.randint(1, 100), c.r.randint(1, 30)
    st = f"A {m} kg object moves at {v} m/s. What is its momentum?"
    steps = ["Momentum p = m × v.", f"p = {m} × {v} = {m * v} kg·m/s."]
    return Problem("momentum", dict(m=m, v=v), m * v, st, steps, f"{m * v} kg·m/s")


def k_density(c: Ctx) -> Problem:
    name, rho = c.pick(MATERIALS)
    vol = c.r.randint(2, 50) * 10
    mass = Fraction(rho) * vol
    st = f"A block has a mass of {num(mass)} g and a volume of {vol} cm³. What is its density, and which material in the table could it be? ({'; '.join(f'{n} {d}' for n, d in MATERIALS)} g/cm³)"
    steps = ["Density = mass ÷ volume.", f"{num(mass)} ÷ {vol} = {rho} g/cm³.", f"That matches {name}."]
    return Problem("density", dict(mass=str(mass), vol=vol), (Fraction(rho), name), st, steps, f"{rho} g/cm³, {name}")


def k_ohm(c: Ctx) -> Problem:
    i, r = Fraction(c.r.randint(1, 20), 2), c.r.randint(2, 100)
    v = i * r
    ask = c.r.randint(0, 2)
    if ask == 0:
        st, steps, val, ans = f"A current of {num(i)} A flows through a {r} Ω resistor. What is the voltage across it?", [f"V = I × R = {num(i)} × {r} = {num(v)} V."], v, f"{num(v)} V"
    elif ask == 1:
        st, steps, val, ans = f"A {num(v)} V battery drives current through a {r} Ω resistor. What is the current?", [f"I = V ÷ R = {num(v)} ÷ {r} = {num(i)} A."], i, f"{num(i)} A"
    else:
        st, steps, val, ans = f"A current of {num(i)} A flows when {num(v)} V is applied. What is the resistance?", [f"R = V ÷ I = {num(v)} ÷ {num(i)} = {r} Ω."], Fraction(r), f"{r} Ω"
    return Problem("ohm", dict(ask=("V", "I", "R")[ask], i=str(i), r=r), val, st, ["Ohm's law: V = I × R."] + steps, ans)


def k_kinetic(c: Ctx) -> Problem:
    m, v = c.r.randint(1, 100), c.r.randint(1, 30)
    e = Fraction(m * v * v, 2)
    st = f"What is the kinetic energy of a {m} kg ball moving at {v} m/s?"
    steps = ["Kinetic energy = 1/2 × m × v².", f"1/2 × {m} × {v}² = 1/2 × {m} × {v * v} = {num(e)} J."]
    return Problem("kinetic", dict(m=m, v=v), e, st, steps, f"{num(e)} J")


G_EARTH = Fraction(98, 10)


def k_potential(c: Ctx) -> Problem:
    m, h = c.r.randint(1, 80), c.r.randint(1, 50)
    e = m * G_EARTH * h
    st = f"A {m} kg box is lifted {h} m. How much gravitational potential energy does it gain? Use g = 9.8 m/s²."
    steps = ["Potential energy = m × g × h.", f"{m} × 9.8 × {h} = {num(e)} J."]
    return Problem("potential", dict(m=m, h=h), e, st, steps, f"{num(e)} J")


def k_work_power(c: Ctx) -> Problem:
    f, d = c.r.randint(5, 500), c.r.randint(1, 40)
    w = f * d
    t = c.pick([k for k in range(1, 61) if w % k == 0])
    st = f"{c.name} pushes a cart with a force of {f} N for {d} m, taking {t} s. How much work is done, and what is the power?"
    steps = [f"Work = force × distance = {f} × {d} = {w} J.", f"Power = work ÷ time = {w} ÷ {t} = {w // t} W."]
    return Problem("work_power", dict(f=f, d=d, t=t), (w, w // t), st, steps, f"{w} J and {w // t} W")


def k_planet_weight(c: Ctx) -> Problem:
    planet, g = c.pick(PLANETS)
    m = c.r.randint(10, 120)
    w = m * Fraction(g)
    st = f"An astronaut's mass is {m} kg. What is the astronaut's weight on {planet}, where gravity is about {g} m/s²?"
    steps = ["Weight = mass × gravitational field strength.", f"{m} × {g} = {num(w)} N.", "The mass stays the same everywhere; only the weight changes."]
    return Problem("planet_weight", dict(m=m, g=g), w, st, steps, f"{num(w)} N")


def k_temperature(c: Ctx) -> Problem:
    if c.r.random() < 0.5:
        t = 5 * c.r.randint(-8, 20)
        f = t * 9 // 5 + 32
        st = f"Convert {t}°C to degrees Fahrenheit."
        steps = ["°F = °C × 9/5 + 32.", f"{t} × 9/5 = {t * 9 // 5}, and {t * 9 // 5} + 32 = {f}."]
        return Problem("temperature", dict(c=t), f, st, steps, f"{f}°F")
    t = 9 * c.r.randint(-4, 20) + 32
    cel = (t - 32) * 5 // 9
    st = f"Convert {t}°F to degrees Celsius."
    steps = ["°C = (°F - 32) × 5/9.", f"{t} - 32 = {t - 32}, and {t - 32} × 5/9 = {cel}."]
    return Problem("temperature", dict(f=t), cel, st, steps, f"{cel}°C")


def k_moles(c: Ctx) -> Problem:
    name, formula, mm = c.pick(MOLAR_MASSES)
    n = Fraction(c.r.randint(1, 12), c.pick((1, 2, 4)))
    mass = n * Fraction(mm)
    st = f"How many moles are in {num(mass)} g of {name} ({formula}, molar mass {mm} g/mol)?"
    steps = ["moles = mass ÷ molar mass.", f"{num(mass)} ÷ {mm} = {num(n)} mol."]
    return Problem("moles", dict(mass=str(mass), mm=str(mm)), n, st, steps, f"{num(n)} mol")


def k_heat(c: Ctx) -> Problem:
    name, cap = c.pick(SPECIFIC_HEATS)
    m, dt = c.r.randint(1, 50) * 10, c.r.randint(2, 60)
    q = m * Fraction(cap) * dt
    st = f"How much heat is needed to warm {m} g of {name} by {dt}°C? The specific heat of {name} is {cap} J/(g·°C)."
    steps = ["Q = m × c × ΔT.", f"Q = {m} × {cap} × {dt} = {num(q)} J."]
    return Problem("heat", dict(m=m, c=cap, dt=dt), q, st, steps, f"{num(q)} J")


def k_wave(c: Ctx) -> Problem:
    f, lam = c.r.randint(2, 500), Fraction(c.r.randint(1, 40), 4)
    v = f * lam
    st = f"A wave has a frequency of {f} Hz and a wavelength of {num(lam)} m. How fast does it travel?"
    steps = ["Wave speed = frequency × wavelength.", f"{f} × {num(lam)} = {num(v)} m/s."]
    return Problem("wave", dict(f=f, lam=str(lam)), v, st, steps, f"{num(v)} m/s")


def k_pressure(c: Ctx) -> Problem:
    area, p = c.r.randint(1, 20), c.r.randint(10, 500)
    force = area * p
    st = f"A force of {force} N presses on an area of {area} m². What is the pressure?"
    steps = ["Pressure = force ÷ area.", f"{force} ÷ {area} = {p} Pa."]
    return Problem("pressure", dict(force=force, area=area), p, st, steps, f"{p} Pa")


def k_half_life(c: Ctx) -> Problem:
    m0, T, k = 2 ** c.r.randint(3, 8) * c.r.randint(1, 5), c.r.randint(2, 30), c.r.randint(1, 4)
    v = Fraction(m0, 2 ** k)
    st = f"A sample of {m0} g of a radioactive isotope has a half-life of {T} days. How much is left after {T * k} days?"
    steps = [f"{T * k} days is {k} half-lives.", f"Each half-life halves the amount: {m0} ÷ 2^{k} = {num(v)} g."]
    return Problem("half_life", dict(m0=m0, T=T, t=T * k), v, st, steps, f"{num(v)} g")


def k_lever(c: Ctx) -> Problem:
    load, d_load = c.r.randint(2, 60) * 10, c.r.randint(1, 5)
    d_eff = c.pick([k for k in range(1, 13) if load * d_load % k == 0 and k != d_load])
    effort = Fraction(load * d_load, d_eff)
    st = f"A {load} N load sits {d_load} m from the pivot of a lever. What effort {d_eff} m from the pivot on the other side balances it?"
    steps = ["A lever balances when effort × its distance = load × its distance.", f"effort = {load} × {d_load} ÷ {d_eff} = {num(effort)} N."]
    return Problem("lever", dict(load=load, d_load=d_load, d_eff=d_eff), effort, st, steps, f"{num(effort)} N")


def k_concentration(c: Ctx) -> Problem:
    vol, conc = c.r.randint(1, 20) * 50, c.r.randint(1, 40)
    mass = Fraction(vol * conc, 1000)
    st = f"{num(mass)} g of salt is dissolved to make {vol} mL of solution. What is the concentration in grams per litre?"
    steps = [f"{vol} mL = {num(Fraction(vol, 1000))} L.", f"Concentration = mass ÷ volume = {num(mass)} ÷ {num(Fraction(vol, 1000))} = {conc} g/L."]
    return Problem("concentration", dict(mass=str(mass), vol=vol), conc, st, steps, f"{conc} g/L")


# Everyday reasoning

def k_unit_price(c: Ctx) -> Problem:
    item = c.item()
    while True:
        q1, q2 = c.r.randint(2, 12), c.r.randint(2, 12)
        p1, p2 = c.r.randint(2, 60) * q1 * 5, c.r.randint(2, 60) * q2 * 5  # in cents, so unit prices are exact
        if q1 != q2 and p1 * q2 != p2 * q1:
            break
    u1, u2 = Fraction(p1, 100 * q1), Fraction(p2, 100 * q2)
    best = "A" if u1 < u2 else "B"
    st = f"At {c.setting.place}, pack A has {q1} {item[1]} for {money(Fraction(p1, 100))} and pack B has {q2} {item[1]} for {money(Fraction(p2, 100))}. Which pack is the better deal?"
    steps = [f"Pack A: {money(Fraction(p1, 100))} ÷ {q1} = {money(u1)} each.", f"Pack B: {money(Fraction(p2, 100))} ÷ {q2} = {money(u2)} each.",
             f"Pack {best} costs less per item."]
    return Problem("unit_price", dict(q1=q1, p1=p1, q2=q2, p2=p2), best, st, steps, f"pack {best}")


def k_budget(c: Ctx) -> Problem:
    (a, b) = c.r.sample(c.setting.items, 2)
    na, nb = c.r.randint(1, 6), c.r.randint(1, 6)
    pa, pb = c.price(a), c.price(b)
    total = na * pa + nb * pb
    bill = next((x for x in (5, 10, 20, 50, 100, 200, 500, 1000) if x >= total), -(-total // 100) * 100)
    st = f"{c.name} buys {na} {a[1] if na > 1 else a[0]} at {money(pa)} each and {nb} {b[1] if nb > 1 else b[0]} at {money(pb)} each, and pays with a {money(bill)} note. What is the total, and how much change does {c.name} get?"
    steps = [f"{na} × {money(pa)} = {money(na * pa)} and {nb} × {money(pb)} = {money(nb * pb)}.", f"The total is {money(total)}.",
             f"The change is {money(bill)} - {money(total)} = {money(bill - total)}."]
    return Problem("budget", dict(na=na, pa=pa, nb=nb, pb=pb, bill=bill), (total, bill - total), st, steps,
                   f"total {money(total)}, change {money(bill - total)}")


def k_recipe(c: Ctx) -> Problem:
    s = c.pick((2, 3, 4, 6, 8))
    t = c.pick([x for x in (1, 2, 3, 4, 5, 6, 8, 10, 12) if x != s])
    q = Fraction(c.r.randint(1, 12), c.pick((1, 2, 4)))
    v = q * t / s
    ing = c.pick(("cups of flour", "cups of milk", "teaspoons of salt", "eggs' worth of batter", "cups of rice", "tablespoons of butter"))
    st = f"A recipe for {s} people uses {mixed(q)} {ing}. How much is needed for {t} people?"
    steps = [f"For 1 person: {mixed(q)} ÷ {s} = {num(q / s)}.", f"For {t} people: {num(q / s)} × {t} = {mixed(v)}."]
    return Problem("recipe", dict(s=s, t=t, q=str(q)), v, st, steps, f"{mixed(v)} {ing}")


def k_logic_order(c: Ctx) -> Problem:
    k = c.r.randint(3, 5 if c.level >= 2 else 4)
    people = c.r.sample(NAMES, k)  # tallest first
    clues = [(people[i], people[i + 1]) for i in range(k - 1)]  # (taller, shorter)
    c.r.shuffle(clues)
    text = []
    for tall, short in clues:
        text.append(c.pick((f"{tall} is taller than {short}.", f"{short} is shorter than {tall}.")))
    ask_tallest = c.r.random() < 0.5
    v = people[0] if ask_tallest else people[-1]
    st = " ".join(text) + f" Who is the {'tallest' if ask_tallest else 'shortest'}?"
    steps = ["Put the clues together into one line, from tallest to shortest:", " > ".join(people) + ".",
             f"So {v} is the {'tallest' if ask_tallest else 'shortest'}."]
    return Problem("logic_order", dict(clues=[list(p) for p in clues], ask="tallest" if ask_tallest else "shortest"), v, st, steps, v)


def k_travel_time(c: Ctx) -> Problem:
    v = 12 * c.r.randint(1, 10)
    minutes = 5 * c.r.randint(3, 60)
    d = v * minutes // 60
    st = f"{c.name} drives {d} km to {c.setting.place} at an average speed of {v} km/h. How long does the journey take?"
    steps = ["Time = distance ÷ speed.", f"{d} ÷ {v} = {num(Fraction(d, v))} hours.", f"That is {minutes // 60} h {minutes % 60} min."]
    return Problem("travel_time", dict(d=d, v=v), minutes, st, steps, f"{minutes // 60} h {minutes % 60} min")


def k_saving(c: Ctx) -> Problem:
    item = c.item()
    goal = c.r.randint(item[2], item[3]) * c.r.randint(2, 10)
    s = c.r.randint(2, max(3, goal // 3))
    weeks = -(-goal // s)
    st = f"{c.name} wants to buy {item[1]} costing {money(goal)} in total and saves {money(s)} a week. How many weeks until {c.name} has enough?"
    steps = [f"{goal} ÷ {s} = {num(Fraction(goal, s))}.", f"Part of a week is not enough, so round up: {weeks} weeks.",
             f"Check: {weeks} × {money(s)} = {money(weeks * s)}, which is at least {money(goal)}."]
    return Problem("saving", dict(goal=goal, s=s), weeks, st, steps, f"{weeks} weeks")


def k_bill_split(c: Ctx) -> Problem:
    people, base = c.r.randint(2, 8), c.r.randint(5, 40)
    tip = c.pick((10, 15, 18, 20))
    total = people * base
    each = Fraction(base * (100 + tip), 100)
    st = f"{people} friends eat at {c.setting.place}. The bill is {money(total)} and they add a {tip}% tip. How much does each person pay if they split it evenly?"
    steps = [f"The tip is {tip}% of {money(total)} = {money(Fraction(total * tip, 100))}.",
             f"The total with tip is {money(Fraction(total * (100 + tip), 100))}.", f"Divided by {people}: {money(each)} each."]
    return Problem("bill_split", dict(people=people, total=total, tip=tip), each, st, steps, f"{money(each)} each")


def k_boxes_needed(c: Ctx) -> Problem:
    per = c.r.randint(4, 24)
    n = c.r.randint(per + 1, per * 30)
    v = -(-n // per)
    one, many = c.item()[:2]
    st = f"{n} {many} must be packed in boxes that hold {per} each. How many boxes are needed?"
    steps = [f"{n} ÷ {per} = {n // per} remainder {n % per}.", f"The leftover {many} need one more box, so {v} boxes." if n % per else f"They fit exactly: {v} boxes."]
    return Problem("boxes_needed", dict(n=n, per=per), v, st, steps, f"{v} boxes")


def k_fuel_cost(c: Ctx) -> Problem:
    d, use, price = 100 * c.r.randint(1, 12), c.r.randint(4, 12), Fraction(c.r.randint(120, 220), 100)
    litres = d // 100 * use
    cost = litres * price
    st = f"A car uses {use} L of fuel per 100 km. Fuel costs {money(price)} per litre. What does a {d} km trip cost?"
    steps = [f"{d} km is {d // 100} hundreds of kilometres, so the car uses {d // 100} × {use} = {litres} L.", f"{litres} × {money(price)} = {money(cost)}."]
    return Problem("fuel_cost", dict(d=d, use=use, price=str(price)), cost, st, steps, money(cost))


def k_paint(c: Ctx) -> Problem:
    w, h, cover = c.r.randint(2, 12), c.r.randint(2, 4), c.r.randint(5, 15)
    cans = -(-w * h // cover)
    st = f"A wall is {w} m wide and {h} m high. One can of paint covers {cover} m². How many cans are needed for one coat?"
    steps = [f"The area is {w} × {h} = {w * h} m².", f"{w * h} ÷ {cover} = {num(Fraction(w * h, cover))}, rounded up to {cans} cans."]
    return Problem("paint", dict(w=w, h=h, cover=cover), cans, st, steps, f"{cans} cans")


def k_timezone(c: Ctx) -> Problem:
    t = c.r.randint(0, 23) * 60 + c.pick((0, 15, 30, 45))
    off = c.r.randint(-10, 10)
    while off == 0:
        off = c.r.randint(-10, 10)
    v = clock(t + 60 * off)
    st = f"It is {clock(t)} where {c.name} lives. {c.other} lives in a city {abs(off)} hours {'ahead' if off > 0 else 'behind'}. What time is it there?"
    steps = [f"{'Add' if off > 0 else 'Subtract'} {abs(off)} hours: {clock(t)} {'+' if off > 0 else '-'} {abs(off)} h = {v}.",
             "On a 24-hour clock, going past midnight starts again from 00:00."]
    return Problem("timezone", dict(t=t, off=off), v, st, steps, v)


def k_sales_tax(c: Ctx) -> Problem:
    item = c.item()
    price = c.price(item) * 4
    tax = c.pick((5, 6, 8, 10, 25))
    v = Fraction(price * (100 + tax), 100)
    st = f"A {item[0]} costs {money(price)} before a {tax}% sales tax. What is the price with tax?"
    steps = [f"The tax is {tax}% of {money(price)} = {money(Fraction(price * tax, 100))}.", f"{money(price)} + {money(Fraction(price * tax, 100))} = {money(v)}."]
    return Problem("sales_tax", dict(price=price, tax=tax), v, st, steps, money(v))


KINDS: dict[str, Callable[[Ctx], Problem]] = {name[2:]: fn for name, fn in globals().items() if name.startswith("k_")}


def check(p: Problem) -> bool:
    """Verify an answer by a second route (mostly the inverse operation), not by redoing the computation."""
    k, q, v = p.kind, p.params, p.value
    if k == "add":
        return v - q["b"] == q["a"]
    if k == "sub":
        return v + q["b"] == q["a"]
    if k == "mul":
        return v % q["b"] == 0 and v // q["b"] == q["a"]
    if k == "divrem":
        return v[0] * q["b"] + v[1] == q["a"] and 0 <= v[1] < q["b"]
    if k in ("frac_add", "frac_mul"):
        x, y = Fraction(q["a"], q["b"]), Fraction(q["c"], q["d"])
        return (v - x == y) if k == "frac_add" else (v / x == y)
    if k == "frac_simplify":
        return math.gcd(v.numerator, v.denominator) == 1 and v.numerator * q["d"] == v.denominator * q["n"]
    if k == "percent_of":
        return v * 100 == q["p"] * q["n"]
    if k == "discount":
        return (q["price"] - v) * 100 == q["price"] * q["d"]
    if k == "percent_change":
        return q["old"] + q["old"] * v / 100 == q["new"]
    if k == "ratio_share":
        return sum(v) == q["total"] and v[0] * q["b"] == v[1] * q["a"]
    if k == "linear_eq":
        return q["a"] * v + q["b"] == q["c"]
    if k == "rect":
        return Fraction(v[0], q["h"]) == q["w"] and Fraction(v[1], 2) - q["h"] == q["w"]
    if k == "triangle":
        return 2 * v / q["h"] == q["b"]
    if k == "circle":
        return v[0] * v[0] == 4 * PI * v[1]  # C² = 4πA
    if k == "pythagoras":
        return v * v + q["a"] ** 2 == q["c"] ** 2 if "c" in q else q["a"] ** 2 + q["b"] ** 2 == v * v
    if k == "mean_median":
        below = sum(x < v[1] for x in q["xs"])
        above = sum(x > v[1] for x in q["xs"])
        return v[0] * len(q["xs"]) == sum(q["xs"]) and below <= len(q["xs"]) // 2 and above <= len(q["xs"]) // 2
    if k == "probability":
        return 0 < v <= 1 and (v * sum(q["counts"].values())).denominator == 1
    if k == "gcd_lcm":
        return q["a"] % v[0] == 0 and q["b"] % v[0] == 0 and v[0] * v[1] == q["a"] * q["b"]
    if k == "prime_factors":
        return math.prod(v) == q["n"] and all(all(f % d for d in range(2, f)) for f in v)
    if k == "power":
        x = v
        for _ in range(q["e"]):
            x, r = divmod(x, q["a"])
            if r:
                return False
        return x == 1
    if k == "arith_seq":
        return (v - q["a1"]) % q["d"] == 0 and (v - q["a1"]) // q["d"] + 1 == q["n"]
    if k == "unit_convert":
        return True  # a single multiplication or division by a table factor; recomputed in the tests
    if k == "simple_interest":
        return v[1] - v[0] == q["p"] and v[0] * 100 / (q["p"] * q["t"]) == q["rate"]
    if k == "compound_interest":
        exact = q["p"] * Fraction(100 + q["rate"], 100) ** q["t"]
        return abs(v - exact) <= Fraction(1, 200)
    if k == "elapsed_time":
        h, m = map(int, v.split(":"))
        return (h * 60 + m - q["dur"]) % 1440 == q["start"] % 1440
    if k == "weekday":
        return (WEEKDAYS.index(v) - q["n"]) % 7 == q["d0"]
    if k == "order_ops":
        return True  # recomputed in the tests by Python's own evaluator
    if k == "rounding":
        return v % q["to"] == 0 and abs(v - q["n"]) * 2 <= q["to"]
    if k == "sqrt":
        return v * v == q["n"]
    if k == "box_volume":
        return Fraction(v, q["l"] * q["w"]) == q["h"]
    if k == "triangle_angles":
        return v + q["a"] + q["b"] == 180
    if k == "factors":
        return v[0] == 1 and v[-1] == q["n"] and all(q["n"] % d == 0 and q["n"] // d in v for d in v)
    if k == "decimal_add":
        return v - Fraction(q["b"]) == Fraction(q["a"])
    if k == "neg_add":
        return v - q["d"] == q["t"]
    if k == "combos":
        return Fraction(v, q["d"] * q["b"]) == q["a"]
    if k == "polygon":
        return Fraction(v, q["sides"]) == q["s"]
    if k == "divisibility":
        return (v == "yes") == (q["n"] % 3 == 0)
    if k == "doubling":
        return Fraction(v, 2 ** (q["t"] // q["k"])) == q["n0"]
    if k == "speed":
        return v * q["t"] == q["d"]
    if k == "acceleration":
        return q["u"] + v * q["t"] == q["v"]
    if k == "force":
        return v / Fraction(q["a"]) == q["m"]
    if k == "momentum":
        return Fraction(v, q["v"]) == q["m"]
    if k == "density":
        return v[0] * q["vol"] == Fraction(q["mass"]) and dict(MATERIALS)[v[1]] == num(v[0])
    if k == "ohm":
        return True  # V = I × R with two of the three drawn; recomputed in the tests
    if k == "kinetic":
        return 2 * v / q["m"] == q["v"] ** 2
    if k == "potential":
        return v / (q["m"] * q["h"]) == G_EARTH
    if k == "work_power":
        return v[0] == q["f"] * q["d"] and v[1] * q["t"] == v[0]
    if k == "planet_weight":
        return v / q["m"] == Fraction(q["g"])
    if k == "temperature":
        return (v - 32) * 5 == 9 * q["c"] if "c" in q else q["f"] == Fraction(v * 9, 5) + 32
    if k == "moles":
        return v * Fraction(q["mm"]) == Fraction(q["mass"])
    if k == "heat":
        return v / (q["m"] * q["dt"]) == Fraction(q["c"])
    if k == "wave":
        return v / q["f"] == Fraction(q["lam"])
    if k == "pressure":
        return v * q["area"] == q["force"]
    if k == "half_life":
        return v * 2 ** (q["t"] // q["T"]) == q["m0"]
    if k == "lever":
        return v * q["d_eff"] == q["load"] * q["d_load"]
    if k == "concentration":
        return Fraction(v * q["vol"], 1000) == Fraction(q["mass"])
    if k == "unit_price":
        return (v == "A") == (q["p1"] * q["q2"] < q["p2"] * q["q1"])
    if k == "budget":
        return v[0] + v[1] == q["bill"] and v[1] >= 0
    if k == "recipe":
        return v * q["s"] / q["t"] == Fraction(q["q"])
    if k == "logic_order":
        taller = {a for a, b in q["clues"]}
        shorter = {b for a, b in q["clues"]}
        return (v not in shorter) if q["ask"] == "tallest" else (v not in taller)
    if k == "travel_time":
        return v * q["v"] == 60 * q["d"]
    if k == "saving":
        return v * q["s"] >= q["goal"] > (v - 1) * q["s"]
    if k == "bill_split":
        return v * q["people"] * 100 == q["total"] * (100 + q["tip"])
    if k == "boxes_needed":
        return v * q["per"] >= q["n"] > (v - 1) * q["per"]
    if k == "fuel_cost":
        return v / Fraction(q["price"]) * 100 == q["d"] * q["use"]
    if k == "paint":
        return v * q["cover"] >= q["w"] * q["h"] > (v - 1) * q["cover"]
    if k == "timezone":
        h, m = map(int, v.split(":"))
        return (h * 60 + m - 60 * q["off"]) % 1440 == q["t"]
    if k == "sales_tax":
        return v * 100 == q["price"] * (100 + q["tax"])
    if k == "cloze":
        return q["sentence"].replace("____", v, 1) in q["facts"]
    raise KeyError(f"no check for problem kind {k!r}")


# --------------------------------------------------------------------------------------------------
# Code tasks: a function, its docstring, one or more implementations, and an independent reference.
# Each implementation is run on the examples and must agree with the reference before it is written.

@dataclass(frozen=True)
class CodeTask:
    name: str
    args: str
    summary: str
    impls: tuple  # (body, explanation) pairs; the body is the function's code, indented by 4
    reference: Callable
    sample: Callable  # (Random) -> a tuple of arguments


def _words(r, k):
    vocab = ("the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "park", "red", "sun", "big", "tree", "we", "see")
    return " ".join(r.choice(vocab) for _ in range(k))


def _ints(r, k, lo=-20, hi=50):
    return [r.randint(lo, hi) for _ in range(k)]


def _ref_primes(n):
    return [p for p in range(2, n + 1) if all(p % d for d in range(2, p))]


def _ref_collatz(n):
    steps = 0
    while n != 1:
        n, steps = (n // 2 if n % 2 == 0 else 3 * n + 1), steps + 1
    return steps


CODE_TASKS = {t.name: t for t in (
    CodeTask("sum_to_n", "n", "Return the sum of the whole numbers from 1 to n.", (
        ("total = 0\nfor i in range(1, n + 1):\n    total += i\nreturn total", "The loop visits every number from 1 to n and adds it to a running total."),
        ("return n * (n + 1) // 2", "Gauss's formula n(n + 1)/2 gives the sum at once, with no loop."),
        ("return sum(range(1, n + 1))", "range(1, n + 1) produces 1, 2, ..., n, and sum adds them up.")),
        lambda n: sum(range(n + 1)), lambda r: (r.randint(1, 100),)),
    CodeTask("sum_of_squares", "n", "Return 1*1 + 2*2 + ... + n*n.", (
        ("total = 0\nfor i in range(1, n + 1):\n    total += i * i\nreturn total", "Each pass of the loop adds the square of the next number."),
        ("return sum(i * i for i in range(1, n + 1))", "A generator expression squares each number and sum adds the squares.")),
        lambda n: n * (n + 1) * (2 * n + 1) // 6, lambda r: (r.randint(1, 30),)),
    CodeTask("factorial", "n", "Return n! = 1 * 2 * ... * n, with 0! = 1.", (
        ("result = 1\nfor i in range(2, n + 1):\n    result *= i\nreturn result", "We start from 1 and multiply in every number from 2 to n."),
        ("if n <= 1:\n    return 1\nreturn n * factorial(n - 1)", "The recursive version uses n! = n × (n - 1)!, stopping at the base case 0! = 1! = 1.")),
        lambda n: math.factorial(n), lambda r: (r.randint(0, 12),)),
    CodeTask("fibonacci", "n", "Return the n-th Fibonacci number, where fibonacci(0) = 0 and fibonacci(1) = 1.", (
        ("a, b = 0, 1\nfor _ in range(n):\n    a, b = b, a + b\nreturn a", "Two variables hold consecutive Fibonacci numbers; each step moves them one place along."),
        ("if n < 2:\n    return n\nreturn fibonacci(n - 1) + fibonacci(n - 2)", "This follows the definition directly; it is clear but slow for large n, because it recomputes the same values.")),
        lambda n: round(((1 + 5 ** 0.5) / 2) ** n / 5 ** 0.5), lambda r: (r.randint(0, 18),)),
    CodeTask("is_prime", "n", "Return True if n is a prime number, otherwise False.", (
        ("if n < 2:\n    return False\nd = 2\nwhile d * d <= n:\n    if n % d == 0:\n        return False\n    d += 1\nreturn True",
         "A divisor larger than the square root would pair with one smaller than it, so checking up to √n is enough."),
        ("return n > 1 and all(n % d != 0 for d in range(2, n))", "all() is True only if no number between 2 and n - 1 divides n.")),
        lambda n: n > 1 and not any(n % d == 0 for d in range(2, n)), lambda r: (r.randint(0, 120),)),
    CodeTask("gcd", "a, b", "Return the greatest common divisor of two positive integers.", (
        ("while b:\n    a, b = b, a % b\nreturn a", "Euclid's algorithm replaces (a, b) by (b, a mod b) until the remainder is 0."),
        ("if b == 0:\n    return a\nreturn gcd(b, a % b)", "The recursive form of Euclid's algorithm: gcd(a, b) = gcd(b, a mod b).")),
        lambda a, b: math.gcd(a, b), lambda r: (r.randint(1, 300), r.randint(1, 300))),
    CodeTask("count_vowels", "text", "Return how many vowels (a, e, i, o, u) the text contains, ignoring case.", (
        ("count = 0\nfor ch in text.lower():\n    if ch in 'aeiou':\n        count += 1\nreturn count", "We lower-case the text so that 'A' and 'a' both count, then test each character."),
        ("return sum(1 for ch in text.lower() if ch in 'aeiou')", "The generator yields 1 for every vowel, and sum counts them.")),
        lambda text: len([ch for ch in text if ch in "aeiouAEIOU"]), lambda r: (_words(r, r.randint(1, 6)).capitalize(),)),
    CodeTask("reverse_string", "text", "Return the text backwards.", (
        ("return text[::-1]", "A slice with step -1 walks the string from the end to the start."),
        ("result = ''\nfor ch in text:\n    result = ch + result\nreturn result", "Each character is put in front of those already seen, which reverses the order.")),
        lambda text: "".join(reversed(text)), lambda r: (_words(r, r.randint(1, 3)),)),
    CodeTask("is_palindrome", "text", "Return True if text reads the same forwards and backwards, ignoring spaces and case.", (
        ("cleaned = text.replace(' ', '').lower()\nreturn cleaned == cleaned[::-1]", "We remove spaces and lower-case the text, then compare it with its reverse."),
        ("cleaned = text.replace(' ', '').lower()\ni, j = 0, len(cleaned) - 1\nwhile i < j:\n    if cleaned[i] != cleaned[j]:\n        return False\n    i, j = i + 1, j - 1\nreturn True",
         "Two indices move towards the middle, comparing the characters at both ends.")),
        lambda text: list(text.replace(" ", "").lower()) == list(reversed(text.replace(" ", "").lower())),
        lambda r: (r.choice(("Never odd or even", "racecar", "level", "hello", "Step on no pets", "python", "noon", "abca", "Was it a car or a cat I saw")),)),
    CodeTask("largest", "numbers", "Return the largest number in a non-empty list.", (
        ("best = numbers[0]\nfor x in numbers[1:]:\n    if x > best:\n        best = x\nreturn best", "We remember the largest value seen so far and update it when a bigger one appears."),
        ("return max(numbers)", "The built-in max does the same scan for us.")),
        lambda numbers: sorted(numbers)[-1], lambda r: (_ints(r, r.randint(1, 7)),)),
    CodeTask("average", "numbers", "Return the mean of a non-empty list of numbers.", (
        ("return sum(numbers) / len(numbers)", "The mean is the total divided by how many numbers there are."),
        ("total = 0\nfor x in numbers:\n    total += x\nreturn total / len(numbers)", "The loop adds up the numbers; dividing by the count gives the mean.")),
        lambda numbers: math.fsum(numbers) / len(numbers), lambda r: ([r.randint(0, 20) * 2 for _ in range(r.choice((2, 4, 5)))],)),
    CodeTask("count_occurrences", "items, target", "Return how many times target appears in items.", (
        ("count = 0\nfor x in items:\n    if x == target:\n        count += 1\nreturn count", "We compare every item with the target and count the matches."),
        ("return items.count(target)", "Lists have a count method that does exactly this.")),
        lambda items, target: sum(x == target for x in items), lambda r: (_ints(r, r.randint(3, 9), 0, 4), r.randint(0, 4))),
    CodeTask("unique", "items", "Return the items without repeats, keeping the first occurrence of each.", (
        ("seen = set()\nresult = []\nfor x in items:\n    if x not in seen:\n        seen.add(x)\n        result.append(x)\nreturn result", "A set remembers what we have already kept, so each value is added once."),
        ("return list(dict.fromkeys(items))", "Dictionary keys are unique and keep insertion order, so dict.fromkeys removes repeats in order.")),
        lambda items: [x for i, x in enumerate(items) if x not in items[:i]], lambda r: (_ints(r, r.randint(2, 9), 0, 6),)),
    CodeTask("flatten", "nested", "Return one list with the elements of a list of lists, in order.", (
        ("result = []\nfor inner in nested:\n    for x in inner:\n        result.append(x)\nreturn result", "The outer loop takes each inner list and the inner loop copies its elements."),
        ("return [x for inner in nested for x in inner]", "A nested list comprehension reads like the two loops, from left to right.")),
        lambda nested: sum(nested, []), lambda r: ([_ints(r, r.randint(0, 3), 0, 9) for _ in range(r.randint(1, 4))],)),
    CodeTask("word_count", "text", "Return a dictionary mapping each word of text to how many times it appears.", (
        ("counts = {}\nfor word in text.split():\n    counts[word] = counts.get(word, 0) + 1\nreturn counts", "get(word, 0) returns the count so far, or 0 for a new word."),),
        lambda text: {w: text.split().count(w) for w in text.split()}, lambda r: (_words(r, r.randint(2, 8)),)),
    CodeTask("char_frequency", "text", "Return a dictionary with the number of times each letter appears in text.", (
        ("freq = {}\nfor ch in text:\n    if ch.isalpha():\n        freq[ch] = freq.get(ch, 0) + 1\nreturn freq", "Only letters are counted; the dictionary grows as new letters appear."),),
        lambda text: {ch: text.count(ch) for ch in text if ch.isalpha()}, lambda r: (_words(r, r.randint(1, 2)),)),
    CodeTask("celsius_to_fahrenheit", "celsius", "Convert a temperature from degrees Celsius to degrees Fahrenheit.", (
        ("return celsius * 9 / 5 + 32", "Multiply by 9/5 to change the size of the degree, then add 32 to shift the zero point."),),
        lambda celsius: (celsius * 18 + 320) / 10, lambda r: (5 * r.randint(-8, 20),)),
    CodeTask("fizzbuzz", "n", "Return the FizzBuzz words for 1..n: 'Fizz' for multiples of 3, 'Buzz' for multiples of 5, 'FizzBuzz' for both, else the number as a string.", (
        ("result = []\nfor i in range(1, n + 1):\n    if i % 15 == 0:\n        result.append('FizzBuzz')\n    elif i % 3 == 0:\n        result.append('Fizz')\n    elif i % 5 == 0:\n        result.append('Buzz')\n    else:\n        result.append(str(i))\nreturn result",
         "The test for 15 comes first: a multiple of 15 is also a multiple of 3 and of 5."),
        ("return ['Fizz' * (i % 3 == 0) + 'Buzz' * (i % 5 == 0) or str(i) for i in range(1, n + 1)]", "Multiplying a string by True or False keeps it or empties it; 'or' falls back to the number.")),
        lambda n: [("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "") or str(i) for i in range(1, n + 1)], lambda r: (r.randint(1, 16),)),
    CodeTask("digit_sum", "n", "Return the sum of the decimal digits of a non-negative integer.", (
        ("total = 0\nwhile n > 0:\n    total += n % 10\n    n //= 10\nreturn total", "n % 10 is the last digit and n // 10 removes it, so the loop peels off one digit at a time."),
        ("return sum(int(d) for d in str(n))", "Turning the number into a string gives its digits as characters.")),
        lambda n: sum(map(int, str(n))), lambda r: (r.randint(0, 10 ** r.randint(1, 7)),)),
    CodeTask("to_binary", "n", "Return the binary digits of a non-negative integer as a string.", (
        ("if n == 0:\n    return '0'\nbits = ''\nwhile n > 0:\n    bits = str(n % 2) + bits\n    n //= 2\nreturn bits", "Each remainder after dividing by 2 is the next binary digit, from right to left."),
        ("return format(n, 'b')", "format with 'b' writes an integer in base 2.")),
        lambda n: bin(n)[2:], lambda r: (r.randint(0, 300),)),
    CodeTask("second_largest", "numbers", "Return the second largest distinct value in a list that has at least two distinct values.", (
        ("return sorted(set(numbers))[-2]", "set removes repeats and sorted puts the values in order, so [-2] is the second largest."),
        ("first = max(numbers)\nreturn max(x for x in numbers if x != first)", "After finding the largest value, we take the largest of the rest.")),
        lambda numbers: sorted(set(numbers), reverse=True)[1], lambda r: ([1, 2] + _ints(r, r.randint(1, 6), 0, 30),)),
    CodeTask("running_total", "numbers", "Return the list of running totals of numbers.", (
        ("totals = []\ntotal = 0\nfor x in numbers:\n    total += x\n    totals.append(total)\nreturn totals", "Each total is the previous total plus the next number."),),
        lambda numbers: [sum(numbers[:i + 1]) for i in range(len(numbers))], lambda r: (_ints(r, r.randint(1, 7), -5, 20),)),
    CodeTask("evens", "numbers", "Return the even numbers of a list, in order.", (
        ("return [x for x in numbers if x % 2 == 0]", "The condition in the comprehension keeps only the numbers with remainder 0 when divided by 2."),
        ("result = []\nfor x in numbers:\n    if x % 2 == 0:\n        result.append(x)\nreturn result", "The loop appends each number that passes the test.")),
        lambda numbers: list(filter(lambda x: x % 2 == 0, numbers)), lambda r: (_ints(r, r.randint(1, 8), 0, 30),)),
    CodeTask("squares", "n", "Return the list of squares of 1..n.", (
        ("return [i * i for i in range(1, n + 1)]", "A list comprehension builds the list in one expression."),
        ("result = []\nfor i in range(1, n + 1):\n    result.append(i ** 2)\nreturn result", "The loop appends i to the power 2 for each i.")),
        lambda n: [i ** 2 for i in range(1, n + 1)], lambda r: (r.randint(1, 10),)),
    CodeTask("merge_sorted", "a, b", "Merge two sorted lists into one sorted list.", (
        ("result = []\ni = j = 0\nwhile i < len(a) and j < len(b):\n    if a[i] <= b[j]:\n        result.append(a[i])\n        i += 1\n    else:\n        result.append(b[j])\n        j += 1\nreturn result + a[i:] + b[j:]",
         "We repeatedly take the smaller front element; when one list runs out, the rest of the other is already in order."),),
        lambda a, b: sorted(a + b), lambda r: (sorted(_ints(r, r.randint(0, 5), 0, 20)), sorted(_ints(r, r.randint(0, 5), 0, 20)))),
    CodeTask("binary_search", "items, target", "Return the index of target in the sorted list items, or -1 if it is absent.", (
        ("lo, hi = 0, len(items) - 1\nwhile lo <= hi:\n    mid = (lo + hi) // 2\n    if items[mid] == target:\n        return mid\n    if items[mid] < target:\n        lo = mid + 1\n    else:\n        hi = mid - 1\nreturn -1",
         "Each comparison halves the part of the list that can still hold the target, so the search takes about log2(n) steps."),),
        lambda items, target: items.index(target) if target in items else -1,
        lambda r: (sorted(r.sample(range(0, 60), r.randint(1, 10))), r.randint(0, 60))),
    CodeTask("linear_search", "items, target", "Return the index of the first occurrence of target in items, or -1.", (
        ("for i, x in enumerate(items):\n    if x == target:\n        return i\nreturn -1", "enumerate gives each position with its item; we stop at the first match."),),
        lambda items, target: next((i for i in range(len(items)) if items[i] == target), -1), lambda r: (_ints(r, r.randint(1, 8), 0, 9), r.randint(0, 9))),
    CodeTask("sort_numbers", "numbers", "Return a new list with the numbers in increasing order.", (
        ("result = list(numbers)\nfor i in range(1, len(result)):\n    x = result[i]\n    j = i - 1\n    while j >= 0 and result[j] > x:\n        result[j + 1] = result[j]\n        j -= 1\n    result[j + 1] = x\nreturn result",
         "Insertion sort: each new value slides left past the larger values before it."),
        ("result = list(numbers)\nfor end in range(len(result) - 1, 0, -1):\n    for i in range(end):\n        if result[i] > result[i + 1]:\n            result[i], result[i + 1] = result[i + 1], result[i]\nreturn result",
         "Bubble sort: each pass swaps neighbours that are out of order, so the largest remaining value bubbles to the end.")),
        lambda numbers: sorted(numbers), lambda r: (_ints(r, r.randint(0, 8)),)),
    CodeTask("capitalize_words", "text", "Return text with the first letter of every word in upper case.", (
        ("return ' '.join(word[0].upper() + word[1:] for word in text.split())", "We split into words, change the first letter of each, and join them with spaces."),),
        lambda text: " ".join(w.capitalize() for w in text.split()), lambda r: (_words(r, r.randint(1, 5)),)),
    CodeTask("min_max", "numbers", "Return a tuple (smallest, largest) of a non-empty list.", (
        ("return min(numbers), max(numbers)", "A function can return two values at once as a tuple."),
        ("lo = hi = numbers[0]\nfor x in numbers:\n    if x < lo:\n        lo = x\n    if x > hi:\n        hi = x\nreturn lo, hi", "One pass keeps both the smallest and the largest value seen so far.")),
        lambda numbers: (sorted(numbers)[0], sorted(numbers)[-1]), lambda r: (_ints(r, r.randint(1, 7)),)),
    CodeTask("is_anagram", "a, b", "Return True if a and b use exactly the same letters, ignoring case.", (
        ("return sorted(a.lower()) == sorted(b.lower())", "Two words are anagrams when their letters, sorted, are the same."),),
        lambda a, b: collections_counter(a.lower()) == collections_counter(b.lower()),
        lambda r: r.choice((("listen", "silent"), ("Dormitory", "dirtyroom"), ("python", "typhon"), ("apple", "paper"), ("night", "thing"), ("cat", "act"), ("dog", "god"), ("moon", "mono"), ("star", "rats"), ("tree", "three")))),
    CodeTask("is_leap_year", "year", "Return True if year is a leap year in the Gregorian calendar.", (
        ("return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)", "Every 4th year is a leap year, except century years, unless they divide by 400."),
        ("if year % 400 == 0:\n    return True\nif year % 100 == 0:\n    return False\nreturn year % 4 == 0", "The tests go from the most specific rule to the most general.")),
        lambda year: (year % 4 == 0) != (year % 100 == 0) or year % 400 == 0, lambda r: (r.choice((1900, 2000, 2023, 2024, 2100, 1996, 2400, 1800, 2012, 2019)),)),
    CodeTask("triangle_number", "n", "Return the n-th triangle number, the number of dots in a triangle with n rows.", (
        ("return n * (n + 1) // 2", "Two copies of the triangle make an n by (n + 1) rectangle, so the count is half of n(n + 1)."),
        ("total = 0\nfor row in range(1, n + 1):\n    total += row\nreturn total", "Row k has k dots, so we add up the rows.")),
        lambda n: sum(range(1, n + 1)), lambda r: (r.randint(1, 50),)),
    CodeTask("collatz_steps", "n", "Return how many steps the Collatz rule (halve if even, else 3n + 1) takes to reach 1 from n.", (
        ("steps = 0\nwhile n != 1:\n    if n % 2 == 0:\n        n = n // 2\n    else:\n        n = 3 * n + 1\n    steps += 1\nreturn steps", "A while loop is the right tool here: we do not know in advance how many steps there will be."),),
        _ref_collatz, lambda r: (r.randint(1, 40),)),
    CodeTask("count_words", "text", "Return the number of words in text, where words are separated by whitespace.", (
        ("return len(text.split())", "split() with no argument splits on any run of whitespace and ignores leading and trailing spaces."),),
        lambda text: len(re.findall(r"\S+", text)), lambda r: (_words(r, r.randint(0, 8)),)),
    CodeTask("power", "base, exp", "Return base raised to the non-negative integer exp.", (
        ("result = 1\nfor _ in range(exp):\n    result *= base\nreturn result", "We multiply 1 by the base exp times."),
        ("if exp == 0:\n    return 1\nhalf = power(base, exp // 2)\nif exp % 2 == 0:\n    return half * half\nreturn half * half * base",
         "Fast exponentiation halves the exponent each call, so it needs only about log2(exp) multiplications.")),
        lambda base, exp: base ** exp, lambda r: (r.randint(-5, 9), r.randint(0, 9))),
    CodeTask("primes_up_to", "n", "Return the list of prime numbers up to and including n.", (
        ("is_prime = [True] * (n + 1)\nprimes = []\nfor p in range(2, n + 1):\n    if is_prime[p]:\n        primes.append(p)\n        for m in range(p * p, n + 1, p):\n            is_prime[m] = False\nreturn primes",
         "The sieve of Eratosthenes crosses out the multiples of each prime; whatever is left uncrossed is prime."),),
        _ref_primes, lambda r: (r.randint(0, 60),)),
    CodeTask("product", "numbers", "Return the product of the numbers in a list (1 for an empty list).", (
        ("result = 1\nfor x in numbers:\n    result *= x\nreturn result", "1 is the starting value because multiplying by 1 changes nothing."),),
        lambda numbers: math.prod(numbers), lambda r: (_ints(r, r.randint(0, 6), -4, 9),)),
    CodeTask("letter_grade", "score", "Return the letter grade for a score out of 100: A for 90 and above, B for 80-89, C for 70-79, D for 60-69, F below 60.", (
        ("if score >= 90:\n    return 'A'\nelif score >= 80:\n    return 'B'\nelif score >= 70:\n    return 'C'\nelif score >= 60:\n    return 'D'\nreturn 'F'", "The conditions are checked from the top, so each branch only sees scores below the earlier thresholds."),),
        lambda score: "FFFFFFDCBAA"[score // 10], lambda r: (r.randint(0, 100),)),
    CodeTask("count_digits", "n", "Return the number of decimal digits of a positive integer.", (
        ("count = 0\nwhile n > 0:\n    n //= 10\n    count += 1\nreturn count", "Each integer division by 10 removes one digit."),
        ("return len(str(n))", "The string form of the number has one character per digit.")),
        lambda n: math.floor(math.log10(n)) + 1 if n < 10 ** 15 else len(str(n)), lambda r: (r.randint(1, 10 ** r.randint(1, 9)),)),
)}


def collections_counter(s: str) -> dict:
    out = {}
    for ch in s:
        out[ch] = out.get(ch, 0) + 1
    return out


def run_function(task: CodeTask, body: str) -> Callable:
    """Define the task's function from its code, in a fresh namespace."""
    src = f"def {task.name}({task.args}):\n" + indent(body, 4)
    namespace = {"__builtins__": builtins}
    exec(compile(src, f"<{task.name}>", "exec"), namespace)
    return namespace[task.name]


def indent(text: str, n: int) -> str:
    return "\n".join((" " * n + line) if line else line for line in text.split("\n"))


def call_text(task: CodeTask, args: tuple) -> str:
    return f"{task.name}({', '.join(map(repr, args))})"


@dataclass
class CodeExample:
    task: str
    args: list
    result: object


def verified_examples(task: CodeTask, body: str, r: random.Random, k: int, stats: dict) -> list:
    """k example calls whose result the implementation and the reference agree on."""
    fn, out = run_function(task, body), []
    for _ in range(4 * k):
        if len(out) == k:
            break
        args = task.sample(r)
        if any(call_text(task, args) == call_text(task, e.args) for e in out):
            continue
        want = task.reference(*args)
        got = fn(*args)
        if got == want and type(got) is type(want):
            stats["code_verified"] += 1
            out.append(CodeExample(task.name, list(args), got))
        else:
            stats["code_failed"] += 1
    return out


def function_source(task: CodeTask, body: str, examples: list) -> str:
    doc = [task.summary, ""] + [line for e in examples for line in (f">>> {call_text(task, e.args)}", repr(e.result))]
    return f"def {task.name}({task.args}):\n" + indent('"""' + "\n".join(doc) + '\n"""', 4) + "\n" + indent(body, 4)


# --------------------------------------------------------------------------------------------------
# Seed topics: concepts with their exposition. [brackets] mark key terms, which the text prints
# without brackets and fill-in-the-blank exercises hide. Each concept lists its problem kinds.

TOPIC_TABLE = """
math | Adding whole numbers | add | Addition combines amounts into one total, called the [sum]. | The order of the numbers does not change the sum; this is the [commutative] property. | When a column adds up to ten or more, we [carry] one ten to the next column.
math | Subtracting whole numbers | sub | Subtraction finds how much is left when one amount is taken from another; the result is the [difference]. | Subtraction [undoes] addition: if 7 + 5 = 12, then 12 - 5 = 7. | We can check a subtraction by [adding] the difference back.
math | Multiplication | mul | Multiplication is [repeated addition]: 4 × 3 means 3 + 3 + 3 + 3. | The numbers being multiplied are called [factors], and the result is the product. | Changing the order of the factors does not change the [product].
math | Division with remainders | divrem | Division splits an amount into [equal groups]. | When an amount cannot be shared exactly, the part left over is the [remainder]. | The remainder is always [smaller] than the number we divide by.
math | Adding fractions | frac_add | The [denominator] of a fraction says how many equal parts make the whole. | The [numerator] says how many of those parts we take. | To add fractions with different denominators, we first rewrite them over a [common denominator].
math | Multiplying fractions | frac_mul | To multiply two fractions we multiply the [numerators] together and the denominators together. | Taking a fraction [of] an amount means multiplying by that fraction. | The product of two proper fractions is [smaller] than either of them.
math | Simplifying fractions | frac_simplify | A fraction is in [simplest form] when its top and bottom share no factor except 1. | Dividing the top and bottom by their [greatest common divisor] simplifies a fraction in one step. | Equivalent fractions name the [same amount] in different ways.
math | Percentages | percent_of | A percentage is a number of parts per [hundred]. | 50% is the same as one [half], and 25% is one quarter. | To find p% of an amount, multiply the amount by p and divide by [100].
math | Discounts and sale prices | discount | A discount is an amount taken [off] a price. | A discount of d% means we pay [100 - d] percent of the original price. | Shops often round sale prices, but the exact discount is the price times the [percentage] over 100.
math | Percent increase and decrease | percent_change | Percent change compares a change with the [original] amount. | Percent change = change ÷ original × [100]. | An increase followed by the same percent decrease does [not] return to the start.
math | Ratios and sharing | ratio_share | A ratio compares the [sizes] of two or more amounts. | To share in a ratio, first find the total number of [parts]. | The ratio 2:3 means that for every 2 of the first there are [3] of the second.
math | Solving linear equations | linear_eq | An equation says that two expressions are [equal]. | Whatever we do to one side of an equation we must do to the [other side]. | We solve for x by undoing operations in [reverse order].
math | Area and perimeter of rectangles | rect | The [perimeter] is the distance around a shape. | The [area] of a rectangle is its length times its width. | Area is measured in [square] units, such as square metres.
math | Area of a triangle | triangle | A triangle's area is [half] of its base times its height. | The height must be measured at a [right angle] to the base. | Two identical triangles can be put together to make a [parallelogram].
math | Circles | circle | The [radius] is the distance from the centre of a circle to its edge. | The circumference of a circle is 2 × π × [r]. | π is about [3.14]; it is the same for every circle.
math | The Pythagorean theorem | pythagoras | In a right triangle, the longest side is called the [hypotenuse]. | The theorem says that a² + b² = [c²]. | The numbers 3, 4 and 5 form a [Pythagorean triple].
math | Mean and median | mean_median | The [mean] is the sum of the values divided by how many there are. | The [median] is the middle value when the values are in order. | The median is less affected by [extreme] values than the mean.
math | Probability | probability | Probability measures how [likely] an event is, from 0 to 1. | When all outcomes are equally likely, probability = favourable outcomes ÷ [total] outcomes. | The probability that an event does not happen is [1] minus the probability that it does.
math | Greatest common divisor and least common multiple | gcd_lcm | The [greatest common divisor] of two numbers is the largest number that divides both. | The least common multiple is the smallest number that both numbers [divide]. | For two numbers, GCD × LCM equals their [product].
math | Prime factorization | prime_factors | A [prime] number has exactly two factors: 1 and itself. | Every whole number greater than 1 can be written as a product of primes in exactly [one] way. | The number [1] is not prime.
math | Powers and exponents | power | An [exponent] says how many times a number is multiplied by itself. | Any non-zero number to the power [0] equals 1. | To multiply powers of the same base we [add] the exponents.
math | Arithmetic sequences | arith_seq | In an arithmetic sequence each term differs from the previous one by the same [common difference]. | The n-th term is the first term plus (n - 1) times the [difference]. | The sequence 2, 5, 8, 11 has a common difference of [3].
math | Converting units | unit_convert | The metric system is based on powers of [ten]. | One kilometre is [1000] metres. | To convert to a smaller unit we [multiply]; to convert to a larger unit we divide.
math | Simple interest | simple_interest | Simple interest is paid only on the original amount, called the [principal]. | Interest = principal × rate × [time]. | The total after some years is the principal plus the [interest].
math | Compound interest | compound_interest | With compound interest, interest is also earned on earlier [interest]. | Each year the balance is multiplied by 1 plus the [rate]. | Over many years, compound interest grows much [faster] than simple interest.
math | Elapsed time | elapsed_time | Elapsed time is how much time passes between a [start] and an end. | There are [60] minutes in an hour. | It helps to add the [hours] first and then the minutes.
math | Days of the week and remainders | weekday | The days of the week repeat every [7] days. | To find a day far in the future, only the [remainder] after dividing by 7 matters. | This kind of counting that wraps around is called [modular] arithmetic.
math | Order of operations | order_ops | Operations inside [brackets] are done first. | Multiplication and division come before [addition] and subtraction. | Operations of the same rank are done from [left] to right.
math | Rounding | rounding | Rounding replaces a number with a [simpler] one that is close to it. | A number exactly halfway is usually rounded [up]. | Rounding is useful for quick [estimates].
math | Square numbers and square roots | sqrt | A [square number] is a number times itself. | The [square root] of a number is the value that, multiplied by itself, gives the number. | The square root of 49 is [7].
math | Volume of a box | box_volume | Volume measures the [space] an object takes up. | The volume of a box is length × width × [height]. | Volume is measured in [cubic] units.
math | Angles in a triangle | triangle_angles | The three angles of any triangle add up to [180] degrees. | A [right angle] measures 90 degrees. | An equilateral triangle has three angles of [60] degrees.
math | Factors and divisors | factors | A [factor] of a number divides it with no remainder. | Factors come in [pairs] that multiply to the number. | Every number has [1] and itself as factors.
math | Adding decimals | decimal_add | Decimals extend place value to [tenths] and hundredths. | When adding decimals we line up the [decimal points]. | 0.5 is the same as one [half].
math | Negative numbers | neg_add | Negative numbers are less than [zero]. | On a number line, negative numbers lie to the [left] of zero. | Temperatures below freezing are often [negative] in degrees Celsius.
math | Counting outcomes | combos | The [multiplication principle] says that independent choices multiply. | With 3 shirts and 2 hats there are [6] outfits. | Listing outcomes in a [tree diagram] helps to count them.
math | Perimeter of polygons | polygon | A [regular polygon] has all sides and all angles equal. | A hexagon has [6] sides. | The perimeter of a regular polygon is the number of sides times the [side length].
math | Divisibility rules | divisibility | A number is divisible by 3 when the sum of its [digits] is. | A number is divisible by 2 when its last digit is [even]. | A number is divisible by 5 when it ends in [0 or 5].
math | Exponential growth | doubling | In exponential growth a quantity is multiplied by the same [factor] in each period. | Doubling 10 times multiplies an amount by [1024]. | Exponential growth eventually outpaces any [linear] growth.
science | Speed | speed | Speed is the [distance] travelled per unit of time. | Average speed = total distance ÷ total [time]. | Speed is measured in units such as [kilometres per hour].
science | Acceleration | acceleration | Acceleration is the rate of change of [velocity]. | An object that slows down has a [negative] acceleration. | Acceleration is measured in [metres per second squared].
science | Newton's second law | force | Newton's second law says that force equals [mass] times acceleration. | Force is measured in [newtons]. | The same force gives a lighter object a [larger] acceleration.
science | Momentum | momentum | Momentum is [mass] times velocity. | In a collision, total momentum is [conserved] if no outside force acts. | A heavy truck and a light bike at the same speed have very [different] momentum.
science | Density | density | Density is [mass] per unit volume. | An object floats in water if its density is [less] than water's. | Water has a density of about [1] gram per cubic centimetre.
science | Ohm's law | ohm | Ohm's law says that voltage equals current times [resistance]. | Current is measured in [amperes] and resistance in ohms. | A larger resistance lets [less] current flow for the same voltage.
science | Kinetic energy | kinetic | Kinetic energy is the energy of [motion]. | Kinetic energy equals half the mass times the speed [squared]. | Doubling the speed makes the kinetic energy [four] times as large.
science | Gravitational potential energy | potential | An object raised above the ground stores [potential energy]. | Potential energy = mass × g × [height]. | Near Earth's surface, g is about [9.8] metres per second squared.
science | Work and power | work_power | Work is done when a [force] moves something through a distance. | Power is the [rate] at which work is done. | Power is measured in [watts]; one watt is one joule per second.
science | Weight on other worlds | planet_weight | [Mass] is the amount of matter in an object and does not change from place to place. | Weight is the [force] of gravity on a mass. | Gravity on the Moon is about one [sixth] of gravity on Earth.
science | Temperature scales | temperature | Water freezes at [0] degrees Celsius and boils at 100 at sea level. | On the Fahrenheit scale water freezes at [32] degrees. | A change of 5 Celsius degrees equals a change of [9] Fahrenheit degrees.
science | The mole | moles | A [mole] is a fixed number of particles, about 6.02 × 10²³. | The [molar mass] of a substance is the mass of one mole of it. | Number of moles = mass ÷ [molar mass].
science | Specific heat | heat | Specific heat is the energy needed to warm one gram of a substance by [one degree] Celsius. | Water has an unusually [high] specific heat. | Heat energy = mass × specific heat × [temperature change].
science | Waves | wave | A wave carries [energy] from one place to another without carrying matter. | The [frequency] is the number of waves passing a point each second. | Wave speed = frequency × [wavelength].
science | Pressure | pressure | Pressure is [force] divided by area. | The same force on a [smaller] area gives a larger pressure. | Pressure is measured in [pascals].
science | Radioactive half-life | half_life | A [half-life] is the time for half of a radioactive sample to decay. | After two half-lives, one [quarter] of the sample remains. | Half-lives range from fractions of a second to billions of [years].
science | Levers and simple machines | lever | A lever turns around a fixed point called the [pivot] or fulcrum. | A lever balances when effort × distance equals load × [distance]. | Simple machines let a small [effort] move a large load.
science | Mixtures and solutions | concentration | A [solution] forms when a substance dissolves evenly in a liquid. | The substance that dissolves is the [solute], and the liquid is the solvent. | Concentration tells how much solute is in a given [volume].
science | Photosynthesis | cloze | Photosynthesis is how plants make [glucose] from carbon dioxide and water. | The energy for photosynthesis comes from [sunlight]. | Photosynthesis releases [oxygen] into the air. | The green pigment that captures light is called [chlorophyll].
science | The water cycle | cloze | The Sun heats water so that it [evaporates] into water vapour. | Water vapour cools and [condenses] into tiny droplets that form clouds. | Water returns to the ground as [precipitation] such as rain or snow. | Water that flows over the land into rivers is called [runoff].
science | States of matter | cloze | A [solid] keeps its own shape. | A [liquid] takes the shape of its container but keeps its volume. | A [gas] spreads out to fill any container. | Melting turns a solid into a [liquid].
science | Cells | cloze | The [cell] is the basic unit of life. | The [nucleus] holds most of a cell's genetic material. | Plant cells have a rigid [cell wall] that animal cells lack. | [Mitochondria] release energy from food.
science | The solar system | planet_weight | The Sun is a [star] at the centre of the solar system. | [Jupiter] is the largest planet. | Planets follow paths called [orbits] around the Sun. | Earth takes about [365] days to orbit the Sun.
science | Food chains | cloze | A food chain shows [what eats what] in an ecosystem. | Plants are [producers] because they make their own food. | Animals that eat only plants are called [herbivores]. | [Decomposers] such as fungi break down dead material.
science | Magnets | cloze | Every magnet has a [north] pole and a south pole. | Opposite poles [attract] each other. | Like poles [repel] each other. | Iron, nickel and cobalt are [magnetic] metals.
science | Electric circuits | ohm | A circuit needs a [closed loop] for current to flow. | A [switch] opens or closes a circuit. | In a [series] circuit, the same current flows through every part.
science | Sound | cloze | Sound is made by [vibrations]. | Sound needs a [medium] such as air or water to travel. | Sound cannot travel through a [vacuum]. | A higher frequency is heard as a higher [pitch].
science | Light and reflection | cloze | Light travels in [straight lines]. | A mirror [reflects] light. | The angle of incidence equals the angle of [reflection]. | Light bends when it passes from air into water; this is called [refraction].
science | The human heart | cloze | The heart is a [muscle] that pumps blood around the body. | [Arteries] carry blood away from the heart. | [Veins] carry blood back to the heart. | The human heart has [four] chambers.
science | The skeleton | cloze | The adult human skeleton has about [206] bones. | The skull protects the [brain]. | Bones meet at [joints], which let the body move. | [Muscles] pull on bones to move them.
science | Digestion | cloze | Digestion breaks food into [nutrients] the body can absorb. | Chewing and [saliva] begin digestion in the mouth. | Most nutrients are absorbed in the [small intestine]. | The [stomach] mixes food with acid.
science | Weather and climate | cloze | [Weather] is the state of the air at a particular time and place. | [Climate] is the usual weather of a place over many years. | Air pressure is measured with a [barometer]. | Wind is moving [air].
science | Volcanoes | cloze | Molten rock below the surface is called [magma]. | Molten rock that reaches the surface is called [lava]. | Many volcanoes form where [tectonic plates] meet. | Volcanic ash can travel [thousands] of kilometres in the wind.
science | Earthquakes | cloze | Earthquakes happen when rocks along a [fault] suddenly slip. | The point on the surface above an earthquake's start is the [epicentre]. | Earthquake waves are recorded by a [seismometer]. | Most earthquakes occur near the edges of [tectonic plates].
science | The rock cycle | cloze | [Igneous] rocks form when molten rock cools. | [Sedimentary] rocks form from layers of sediment pressed together. | [Metamorphic] rocks form when heat and pressure change existing rock. | Weathering and [erosion] break rocks into sediment.
science | Phases of the Moon | cloze | The Moon does not make its own light; it [reflects] sunlight. | A full cycle of phases takes about [29.5] days. | At [new moon] the side facing us is dark. | The Moon's phases are caused by its changing [position] relative to the Sun and Earth.
science | The seasons | cloze | Seasons happen because Earth's axis is [tilted]. | When a hemisphere is tilted towards the Sun, it has [summer]. | The tilt of Earth's axis is about [23.5] degrees. | Days are [longer] in summer than in winter.
science | Friction | cloze | Friction is a force that [opposes] motion between surfaces. | Rough surfaces usually produce [more] friction than smooth ones. | Friction turns kinetic energy into [heat]. | Oil and grease [reduce] friction between moving parts.
science | Atoms | cloze | Atoms are made of protons, neutrons and [electrons]. | [Protons] carry a positive charge. | The [nucleus] contains the protons and neutrons. | The number of protons is the [atomic number].
science | The periodic table | moles | The periodic table arranges elements by [atomic number]. | Elements in the same [group] have similar properties. | The rows of the table are called [periods].
science | Acids and bases | cloze | The [pH] scale measures how acidic or basic a solution is. | A pH of [7] is neutral. | Lemon juice is an [acid]. | An acid and a base can [neutralise] each other.
science | Chemical reactions | cloze | In a chemical reaction, atoms are [rearranged] into new substances. | Mass is [conserved] in a chemical reaction. | The starting substances are called [reactants]. | The new substances formed are called [products].
science | DNA and genes | cloze | [DNA] carries the instructions for building living things. | A [gene] is a section of DNA. | DNA has the shape of a [double helix]. | Offspring inherit genes from their [parents].
science | Natural selection | cloze | Individuals in a population show [variation]. | Individuals better suited to their environment are more likely to [survive] and reproduce. | Over many generations this leads to [evolution]. | Charles [Darwin] described natural selection.
science | Ecosystems | cloze | An [ecosystem] includes living things and their physical surroundings. | A [habitat] is the place where an organism lives. | Organisms that depend on each other form a [food web]. | Sunlight is the main source of [energy] for most ecosystems.
science | Renewable energy | cloze | [Renewable] energy comes from sources that are naturally replaced. | [Solar panels] turn sunlight into electricity. | Wind turbines turn the energy of moving [air] into electricity. | Coal and oil are [fossil fuels].
science | Germs and vaccines | cloze | [Bacteria] are tiny single-celled organisms. | A [vaccine] trains the immune system to recognise a germ. | Washing hands with [soap] removes many germs. | [Antibiotics] treat bacterial infections but not viral ones.
science | The nervous system | cloze | The [brain] controls the body. | Nerves carry [signals] between the brain and the body. | The brain and the [spinal cord] form the central nervous system. | A [reflex] is a fast automatic response.
science | Parts of a plant | cloze | [Roots] take in water and minerals from the soil. | The [stem] holds the plant up. | [Leaves] are where most photosynthesis happens. | [Flowers] make seeds.
science | Classifying animals | cloze | [Mammals] feed their young on milk. | [Birds] have feathers and lay eggs. | [Reptiles] have dry scaly skin. | [Amphibians] such as frogs live both in water and on land.
science | Conservation of energy | potential | Energy cannot be created or [destroyed]. | Energy can [change] from one form to another. | A falling ball turns potential energy into [kinetic] energy.
science | Gravity | planet_weight | Gravity is a force of [attraction] between masses. | The more [mass] an object has, the stronger its pull. | Gravity keeps the Moon in [orbit] around Earth.
science | Erosion | cloze | Erosion is the [wearing away] of land. | [Water] is the main cause of erosion. | Plant [roots] help hold soil in place. | Rivers carry eroded material and [deposit] it downstream.
science | Lungs and breathing | cloze | The lungs take in [oxygen] and release carbon dioxide. | Air enters the lungs through the [windpipe]. | Gas exchange happens in tiny air sacs called [alveoli]. | The [diaphragm] is a muscle that helps us breathe.
science | Stars | cloze | A star shines because of nuclear [fusion] in its core. | The [Sun] is the closest star to Earth. | A [light-year] is the distance light travels in one year. | Stars are grouped in huge systems called [galaxies].
everyday | Comparing prices per unit | unit_price | The [unit price] is the cost of one item or one unit of weight. | A bigger pack is not always [cheaper] per item. | To compare packs fairly, divide each price by its [quantity].
everyday | Planning a budget | budget | A [budget] is a plan for spending money. | The [change] is what you get back when you pay more than the total. | Adding up prices [before] paying avoids surprises.
everyday | Scaling a recipe | recipe | Scaling a recipe keeps the [ratios] of the ingredients the same. | To scale, first find the amount for [one] serving. | Doubling a recipe [doubles] every ingredient.
everyday | Reasoning with clues | logic_order | Clues about [order] can be combined into one line. | If A is taller than B and B is taller than C, then A is taller than [C]. | This property of "taller than" is called [transitivity].
everyday | Planning a journey | travel_time | Travel time = distance ÷ [speed]. | Half an hour is [30] minutes. | Allowing [extra] time for delays is a good habit.
everyday | Saving for a goal | saving | Saving a fixed amount each week makes a goal [predictable]. | When the division is not exact, we round [up] the number of weeks. | Saving a little [regularly] adds up over time.
everyday | Splitting a bill | bill_split | A [tip] is extra money given for good service. | To split a bill evenly, divide the [total] by the number of people. | A 10% tip is found by moving the decimal point [one] place left.
everyday | Packing boxes | boxes_needed | When items do not fill the last box exactly, we still need a [whole] box. | This is a division where we round [up]. | Packing problems are about [remainders].
everyday | The cost of fuel | fuel_cost | Fuel use is often given in [litres] per 100 kilometres. | A longer trip uses [more] fuel. | Trip cost = fuel used × [price] per litre.
everyday | Painting a room | paint | The amount of paint depends on the [area] to cover. | Paint cans are bought [whole], so we round up. | A second coat needs [twice] as much paint.
everyday | Reading timetables | elapsed_time | A [timetable] lists departure and arrival times. | The [24-hour] clock avoids confusing morning and evening. | 14:30 on the 24-hour clock is half past [two] in the afternoon.
everyday | Time zones | timezone | The Earth is divided into [time zones]. | Places to the east are usually [ahead] in time. | Crossing midnight changes the [date].
everyday | Making change | budget | The total cost is the sum of [each] item's price times its quantity. | Change = amount paid − [total]. | Counting up from the total to the amount paid is a quick way to find the [change].
everyday | Planning a week | weekday | A week has [seven] days. | Two weeks from a Monday is again a [Monday]. | Calendars repeat in a [cycle].
everyday | Sharing equally | divrem | Sharing equally means everyone gets the [same] amount. | Whatever cannot be shared is the [remainder]. | Sharing is [division].
everyday | Sales tax | sales_tax | [Sales tax] is a percentage added to a price. | The price with tax is the price times 1 plus the tax [rate]. | Tax rates differ between [places].
everyday | Sleep schedules | elapsed_time | Most teenagers need about [8] to 10 hours of sleep. | Going to bed at the same time helps keep a regular [rhythm]. | Counting back from the wake-up time gives the best [bedtime].
everyday | Estimating a shopping bill | rounding | [Estimating] gives a quick answer that is close to the exact one. | Rounding each price to the nearest [dollar] makes adding easy. | An estimate helps to [check] the exact total.
everyday | Reading nutrition labels | percent_of | A nutrition label lists the [energy] and nutrients in a serving. | Percent daily value compares a nutrient with the amount needed in a [day]. | Serving sizes help compare [different] foods.
everyday | Choosing outfits | combos | Each independent choice [multiplies] the number of possibilities. | Adding one more shirt adds a whole set of new [outfits]. | Listing choices in a [table] helps avoid missing any.
everyday | Ordering a race | logic_order | The winner of a race is the one who finishes [first]. | If we know who beat whom, we can [rank] the runners. | A single chain of clues fixes the whole [order].
programming | Variables and expressions | code:celsius_to_fahrenheit,triangle_number | A [variable] is a name that refers to a value. | The [=] sign assigns a value to a name; it does not test equality. | An [expression] combines values and operators to compute a new value.
programming | Functions and return values | code:power,count_words | A [function] is a named block of code that can be reused. | The [return] statement sends a result back to the caller. | Values passed to a function are called [arguments].
programming | Conditionals | code:letter_grade,is_leap_year | An [if] statement runs code only when a condition is true. | [elif] checks another condition when the earlier ones were false. | The [else] branch runs when no condition was true.
programming | For loops | code:sum_to_n,sum_of_squares,product | A [for] loop repeats code once for each item of a sequence. | range(1, n + 1) produces the numbers from 1 to [n]. | A variable that collects a result across iterations is an [accumulator].
programming | While loops | code:digit_sum,collatz_steps,count_digits | A [while] loop repeats as long as its condition is true. | Something in the loop must change, or it runs [forever]. | While loops suit problems where the number of steps is not known in [advance].
programming | Lists | code:largest,average,second_largest | A [list] holds items in order. | List indexes start at [0]. | The len function returns the [number] of items in a list.
programming | List comprehensions | code:squares,evens | A list comprehension builds a list in a single [expression]. | An [if] clause in a comprehension filters the items. | Comprehensions are often shorter and clearer than [loops] that append.
programming | Strings | code:reverse_string,count_vowels,capitalize_words | A [string] is a sequence of characters. | Strings are [immutable]: methods return new strings instead of changing the old one. | The slice s[::-1] gives the string [reversed].
programming | Dictionaries | code:word_count,char_frequency | A [dictionary] maps keys to values. | Looking up a key in a dictionary is [fast], even for large dictionaries. | The get method returns a [default] when the key is missing.
programming | Sets | code:unique,is_anagram | A [set] holds each value at most once. | Testing membership in a set is [fast]. | Sets have no [order] of their own.
programming | Tuples | code:min_max | A [tuple] is an ordered collection that cannot be changed. | A function can return several values as a [tuple]. | Tuples can be [unpacked] into separate variables.
programming | Recursion | code:factorial,fibonacci,power | A [recursive] function calls itself. | Every recursion needs a [base case] that stops it. | Each recursive call should work on a [smaller] problem.
programming | Sorting | code:sort_numbers | Sorting puts items in [order]. | [Insertion sort] builds the sorted list one item at a time. | Python's built-in sorted function returns a [new] list.
programming | Searching | code:linear_search,binary_search | [Linear search] checks the items one by one. | [Binary search] needs the list to be sorted. | Binary search halves the search range at each [step].
programming | Modulo and FizzBuzz | code:fizzbuzz | The [%] operator gives the remainder of a division. | A number is divisible by k when n % k equals [0]. | FizzBuzz is a classic exercise in [conditions] and loops.
programming | Prime numbers in code | code:is_prime,primes_up_to | A prime has no divisors other than 1 and [itself]. | It is enough to test divisors up to the [square root]. | The [sieve of Eratosthenes] finds all primes up to a limit.
programming | Euclid's algorithm | code:gcd | Euclid's algorithm finds the [greatest common divisor]. | It repeatedly replaces the pair (a, b) with (b, a [mod] b). | Euclid's algorithm is one of the [oldest] algorithms still in use.
programming | Palindromes | code:is_palindrome | A [palindrome] reads the same forwards and backwards. | Comparing a string with its [reverse] tests for a palindrome. | Ignoring [spaces] and case lets whole sentences be palindromes.
programming | Running totals | code:running_total | A [running total] adds each new value to the sum so far. | Running totals are also called [cumulative] sums. | The last running total is the [sum] of all values.
programming | Merging sorted lists | code:merge_sorted | Merging combines two [sorted] lists into one. | Merging takes the [smaller] front element at each step. | Merging is the key step of [merge sort].
programming | Binary numbers | code:to_binary | Computers store numbers in [binary], using only 0 and 1. | Each binary digit is called a [bit]. | The binary number 101 equals [5] in decimal.
programming | Counting with code | code:count_occurrences,count_words | A [counter] variable starts at 0 and grows by 1 for each match. | The [split] method breaks text into words. | Counting is one of the most common [patterns] in programs.
programming | Nested lists | code:flatten | A list can contain other [lists]. | Nested loops visit every item of a [nested] list. | Flattening turns a list of lists into a [single] list.
programming | Docstrings and doctests | code:sum_to_n,digit_sum,capitalize_words | A [docstring] describes what a function does. | Lines starting with >>> in a docstring are [examples] that can be run as tests. | The [doctest] module checks that the examples give the shown results.
programming | Testing with assertions | code:is_palindrome,largest,gcd | An [assert] statement stops the program if a condition is false. | Tests compare a function's output with the [expected] result. | Good tests include [edge cases] such as empty lists.
programming | Time complexity | code:linear_search,binary_search,sort_numbers | Time complexity describes how running time grows with the [input size]. | Linear search takes time proportional to [n]. | Binary search takes time proportional to [log n].
programming | Boolean logic | code:is_leap_year,is_prime | A [Boolean] value is either True or False. | [and] is true only when both sides are true. | [or] is true when at least one side is true.
programming | Anagrams | code:is_anagram | An [anagram] rearranges the letters of a word. | Sorting the letters gives each word a [signature]. | "listen" and "silent" are [anagrams].
"""


@dataclass(frozen=True)
class Topic:
    area: str
    title: str
    kinds: tuple  # problem kinds, or code task names for programming topics
    facts: tuple  # sentences with [key terms]


def _parse_topics(table: str) -> tuple:
    topics = []
    for line in table.strip().splitlines():
        area, title, kinds, *facts = (part.strip() for part in line.split(" | "))
        kinds = tuple(kinds.removeprefix("code:").split(",")) if area == "programming" else (kinds,)
        topics.append(Topic(area, title, kinds, tuple(facts)))
    return tuple(topics)


TOPICS = _parse_topics(TOPIC_TABLE)


def seed_topics() -> list:
    """Every seed topic: a concept crossed with a setting, as in "Ratios and sharing, at a bakery"."""
    return [f"{t.title}, at {s.place}" for t in TOPICS for s in SETTINGS]


def plain(sentence: str) -> str:
    return sentence.replace("[", "").replace("]", "")


def k_cloze(c: Ctx, topic: Topic) -> Problem:
    fact = c.pick(topic.facts)
    terms = re.findall(r"\[([^\]]+)\]", fact)
    term = c.pick(terms)
    sentence = plain(fact.replace(f"[{term}]", "____", 1))
    st = c.pick(("Fill in the blank: ", "Complete the sentence: ", "Which word or words complete this sentence? ",
                 "Fill in the missing words: ")) + sentence
    return Problem("cloze", dict(sentence=sentence, facts=[plain(f) for f in topic.facts]), term, st,
                   [f"The missing word is '{term}'."], term)


# --------------------------------------------------------------------------------------------------
# Writing a section

@dataclass
class Section:
    text: str
    topic: str
    area: str
    audience: str
    style: str
    problems: list = field(default_factory=list)  # every worked example and exercise, answered
    code: list = field(default_factory=list)  # every verified code example
    stats: dict = field(default_factory=dict)


OPENERS = {
    "textbook": ("{n}.{m} {Title}", "Section {n}.{m}: {Title}", "Chapter {n}, part {m}. {Title}"),
    "lecture notes": ("Lecture {n}: {Title}", "Notes for lecture {n} - {Title}", "{Title} (lecture notes, week {n})"),
    "tutorial": ("{Title}: a step-by-step guide", "How to work with {t}", "A practical tutorial on {t}"),
    "dialogue": ("{Title}: a conversation", "Talking it through: {t}", "A lesson in conversation: {t}"),
    "story": ("{Name} and {t}", "A day at {s}: {t}", "The puzzle of {s}"),
}


def problem_block(p: Problem, label: str, style: str, c: Ctx, teacher: str, student: str) -> list:
    if style == "dialogue":
        lines = [f"{teacher}: {label}. {p.statement}", f"{student}: " + c.pick(("Let me think. ", "Okay. ", "I'll try. ")) + p.steps[0]]
        for s in p.steps[1:]:
            lines.append(f"{teacher if len(lines) % 2 else student}: {s}")
        lines.append(f"{teacher}: " + c.pick(("Exactly. The answer is {a}.", "Well done: {a}.", "Right, {a}.")).format(a=p.answer))
        return ["\n".join(lines)]
    if style == "story":
        return [f"{p.statement}", " ".join(p.steps) + " " + c.pick(("So the answer was {a}.", "The answer: {a}.", "That gave {a}.")).format(a=p.answer)]
    if style == "lecture notes":
        return [f"{label}. {p.statement}", "\n".join(f"  - {s}" for s in p.steps) + f"\n  Result: {p.answer}"]
    if style == "tutorial":
        return [f"{label}: {p.statement}", "\n".join(f"{i + 1}. {s}" for i, s in enumerate(p.steps)) + f"\n\nAnswer: {p.answer}"]
    return [f"**{label}.** {p.statement}", "*Solution.* " + " ".join(p.steps), f"Answer: {p.answer}"]


def section(seed: int, index: int) -> Section:
    """The index-th section of the corpus for this seed."""
    r = random.Random(f"{seed}:{index}")
    topic, setting = r.choice(TOPICS), r.choice(SETTINGS)
    audience, style = r.choice(AUDIENCES), r.choice(STYLES)
    name, other = r.sample(NAMES, 2)
    c = Ctx(r, audience.level, setting, name, other)
    sec = Section("", f"{topic.title}, at {setting.place}", topic.area, audience.name, style,
                  stats={"problems_verified": 0, "problems_failed": 0, "code_verified": 0, "code_failed": 0})
    t = topic.title[0].lower() + topic.title[1:]
    teacher, student = ("Teacher", name) if audience.level <= 1 else (other, name)
    fields = dict(Title=topic.title, t=t, T=topic.title, s=setting.place, Name=name,
                  n=r.randint(1, 12), m=r.randint(1, 9))
    out = ["# " + r.choice(OPENERS[style]).format(**fields)]
    out.append(r.choice(audience.hooks).format(**fields))

    # Exposition: the key facts, in the voice of the style.
    facts = [plain(f) for f in topic.facts]
    if style == "dialogue":
        out.append(f"{student}: What is {t} about?\n{teacher}: {facts[0]}\n{student}: " +
                   r.choice(("Is there more to it?", "What else should I know?", "Why does that matter?")) +
                   f"\n{teacher}: " + " ".join(facts[1:]))
    elif style == "story":
        out.append(f"{name} was at {setting.place} with {other}. " + r.choice((
            f"{other} smiled and explained: \"{facts[0]}\"", f"{name} remembered what the teacher had said: {facts[0]}",
            f"On the wall was a poster that said: \"{facts[0]}\"")) + " " + " ".join(facts[1:]))
    elif style == "lecture notes":
        out.append("Key points:\n" + "\n".join(f"- {f}" for f in facts))
    elif style == "tutorial":
        out.append("Step 1: understand the idea. " + " ".join(facts))
    else:
        out.append(r.choice(("## Key ideas", "## The main idea", "## What you need to know")))
        out.append(" ".join(facts))

    if topic.area == "programming":
        examples, exercises, answers = write_code(c, topic, style, out, sec)
    else:
        examples, exercises, answers = write_problems(c, topic, style, out, sec, teacher, student)
    sec.problems = examples + exercises

    # Exercises, then their answers.
    header = {"textbook": "## Exercises", "lecture notes": "Practice problems:", "tutorial": "Step 3: practise.",
              "dialogue": f"{teacher}: Now try these on your own.", "story": "Try it yourself:"}[style]
    out.append(header + "\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(p.statement for p in exercises)) +
               ("\n" + "\n".join(f"{len(exercises) + i + 1}. {q}" for i, (q, _) in enumerate(answers)) if answers else ""))
    out.append({"textbook": "## Answers", "lecture notes": "Solutions:", "tutorial": "Check your answers:",
                "dialogue": "Answers:", "story": "Answers:"}[style] + "\n" +
               "\n".join([f"{i + 1}. {p.answer}" for i, p in enumerate(exercises)] +
                         [f"{len(exercises) + i + 1}. {a}" for i, (_, a) in enumerate(answers)]))
    f = plain(r.choice(topic.facts))
    out.append(r.choice(audience.closings).format(f=f, f0=f[0].lower() + f[1:], **fields))
    sec.text = "\n\n".join(out) + "\n"
    return sec


def write_problems(c: Ctx, topic: Topic, style: str, out: list, sec: Section, teacher: str, student: str):
    kind = topic.kinds[0]
    make = (lambda: k_cloze(c, topic)) if kind == "cloze" else (lambda: KINDS[kind](c))
    examples, exercises = [], []
    for want, dest in ((1 if kind == "cloze" else c.r.randint(1, 2), examples), (c.r.randint(2, 4), exercises)):
        for _ in range(10 * want):  # a few tries: a small topic can run out of distinct problems
            if len(dest) == want:
                break
            p = make()
            if any(p.statement == q.statement for q in examples + exercises):
                continue
            if check(p):
                sec.stats["problems_verified"] += 1
                dest.append(p)
            else:
                sec.stats["problems_failed"] += 1
    # a second kind of exercise: a fill-in-the-blank on the key facts
    if kind != "cloze":
        p = k_cloze(c, topic)
        if check(p):
            sec.stats["problems_verified"] += 1
            exercises.append(p)
        else:
            sec.stats["problems_failed"] += 1
    if style == "tutorial":
        out.append("Step 2: see it in action.")
    elif style == "textbook":
        out.append(c.pick(("## Worked examples", "## Examples", "## Worked problems")))
    elif style == "lecture notes":
        out.append("Worked examples:")
    word = c.pick(("Example", "Problem", "Worked example"))
    for i, p in enumerate(examples):
        label = f"{word} {i + 1}"
        if style == "story" and i == 0:
            out.append(c.pick((f"Then {c.name} noticed a puzzle.", f"{c.other} had a question for {c.name}.", "Soon there was a problem to solve.")))
        out.extend(problem_block(p, label, style, c, teacher, student))
    return examples, exercises, []


def write_code(c: Ctx, topic: Topic, style: str, out: list, sec: Section):
    tasks = [CODE_TASKS[n] for n in topic.kinds]
    shown = c.pick(tasks)
    body, explanation = c.pick(shown.impls)
    examples = verified_examples(shown, body, c.r, 2, sec.stats)
    intro = {"textbook": "## Example", "lecture notes": "Example:", "tutorial": "Step 2: see it in action.",
             "dialogue": f"{c.other if c.level > 1 else 'Teacher'}: Let's look at some code.", "story": f"{c.name} opened a laptop and wrote:"}[style]
    out.append(f"{intro}\n\nHere is a function `{shown.name}`. {shown.summary}")
    out.append("```python\n" + function_source(shown, body, examples) + "\n```")
    out.append(explanation)
    sec.code.extend(examples)
    if len(shown.impls) > 1:
        body2, explanation2 = c.pick([im for im in shown.impls if im[0] != body])
        more = verified_examples(shown, body2, c.r, 1, sec.stats)
        out.append(c.pick(("The same function can be written differently:", "Another way to write it:", "Here is an alternative:")))
        out.append("```python\n" + function_source(shown, body2, more) + "\n```")
        out.append(explanation2)
        sec.code.extend(more)
    # Exercises: predict outputs (answers computed by running the code), then write a function.
    exercises, answers = [], []
    shown_calls = {call_text(shown, tuple(e.args)) for e in sec.code}
    for e in verified_examples(shown, body, c.r, c.r.randint(1, 3), sec.stats):
        if call_text(shown, tuple(e.args)) not in shown_calls:
            exercises.append(Problem("code_output", dict(task=shown.name, args=e.args), e.result,
                                     f"What does `{call_text(shown, tuple(e.args))}` return?", [], repr(e.result)))
            sec.code.append(e)
    other = c.pick([t for t in CODE_TASKS.values() if t.name != shown.name] if len(tasks) == 1 else [t for t in tasks if t is not shown])
    obody, _ = c.pick(other.impls)
    oex = verified_examples(other, obody, c.r, 1, sec.stats)
    if oex:
        sec.code.extend(oex)
        answers.append((f"Write a function `{other.name}({other.args})`: {other.summary[0].lower() + other.summary[1:]}",
                        "\n```python\n" + function_source(other, obody, oex) + "\n```"))
    p = k_cloze(c, topic)
    if check(p):
        sec.stats["problems_verified"] += 1
        exercises.append(p)
    else:
        sec.stats["problems_failed"] += 1
    return [], exercises, answers
