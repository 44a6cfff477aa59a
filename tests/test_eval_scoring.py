"""Zero-shot multiple choice and perplexity: log-likelihoods equal those computed from transformers'
PhiForCausalLM logits and CodeGen tokenizer on the same random weights; right-padded batches score
as unpadded sequences do; the prompts are lm-evaluation-harness's, written out by hand; a model with
fixed logits gives hand-computed scores, acc and acc_norm; perplexity and bits per byte against
transformers' logits and hand arithmetic; MMLU's few-shot prompts written out by hand, its two averages
by hand; SQuAD's normalization, exact match and F1 as the official script computes them, by hand;
greedy HumanEval, GSM8K and SQuAD completions equal transformers' generate cut at the same stops."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import HF_CONFIGS, assert_greedy_well_posed, make_hf_model
from eval import (SQUAD_STOPS, Question, TASKS, complete, encode_pair, loglikelihoods, mmlu_averages, perplexity,
                  read_gsm8k, read_humaneval, read_mmlu, read_squad, read_task, read_tokens, score_questions,
                  squad_normalize, squad_scores, token_bytes)
from checkpoint import config_from_hf
from model import Phi, PhiConfig
from tokenizer import Tokenizer

# A small phi with the real vocabulary, so that real text can be scored.
HF_REAL_VOCAB = dict(HF_CONFIGS["head64_rotary32"], vocab_size=51200, max_position_embeddings=256)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


@pytest.fixture(scope="module")
def pair():
    """transformers' model and ours with the same random weights, in float64."""
    hf = make_hf_model(HF_REAL_VOCAB, dtype=torch.float64, std=0.1)
    model = Phi(config_from_hf(hf.config.to_dict())).double().eval()
    model.load_state_dict(hf.state_dict())
    return hf, model


# -----------------------------------------------------------------------------
# Hand-made rows in each dataset's format, and the requests lm-evaluation-harness makes of them

ROWS = {
    "arc_easy": {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster "
                 "after a meteorite impact. Which is the most likely effect of this increase in rotation?",
                 "choices": {"text": ["Planetary density will decrease.", "Planetary years will become longer.",
                                      "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                             "label": ["A", "B", "C", "D"]}, "answerKey": "C"},
    "arc_challenge": {"id": "NYSEDREGENTS_2015_4_8", "question": "Which object is a source of light?",
                      "choices": {"text": ["a mirror", "the Moon", "a candle flame", "a window"],
                                  "label": ["1", "2", "3", "4"]}, "answerKey": "3"},
    "boolq": {"question": "do iran and afghanistan speak the same language",
              "passage": "Persian language -- Persian is spoken in Iran, Afghanistan and Tajikistan.",
              "idx": 0, "label": 1},
    "hellaswag": {"ind": 4, "activity_label": "Home and Garden",
                  "ctx_a": "[header] How to clean a grill [title] Heat the grill.", "ctx_b": "turn the burners on HIGH",
                  "ctx": "unused", "endings": ["[step] Close the lid and wait.", "Scrape  the grates [substeps] gently.",
                                               "Eat the grill.", "Paint it blue."],
                  "source_id": "wikihow~1", "split": "val", "split_type": "indomain", "label": "1"},
    "openbookqa": {"id": "7-980", "question_stem": "The sun is responsible for",
                   "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                                        "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                               "label": ["A", "B", "C", "D"]}, "answerKey": "D"},
    "piqa": {"goal": "When boiling butter, when it's ready, you can", "sol1": "Pour it onto a plate",
             "sol2": "Pour it into a jar", "label": 1},
    "siqa": {"context": "Cameron decided to have a barbecue and gathered her friends together.",
             "question": "How would Others feel as a result?", "answerA": "like attending",
             "answerB": "like staying home", "answerC": "a good friend to have", "label": "1"},
    "winogrande": {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
                   "option1": "Sarah", "option2": "Maria", "answer": "1"},
}

HELLASWAG_CONTEXT = "Home and Garden: How to clean a grill. Heat the grill. Turn the burners on high"
EXPECTED = {  # (requests, gold, the texts acc_norm divides by)
    "arc_easy": ([("Question: An astronomer observes that a planet rotates faster after a meteorite impact. "
                   "Which is the most likely effect of this increase in rotation?\nAnswer:", " " + c)
                  for c in ROWS["arc_easy"]["choices"]["text"]], 2, ROWS["arc_easy"]["choices"]["text"]),
    "arc_challenge": ([("Question: Which object is a source of light?\nAnswer:", " " + c)
                       for c in ["a mirror", "the Moon", "a candle flame", "a window"]], 2,
                      ["a mirror", "the Moon", "a candle flame", "a window"]),
    "boolq": ([("Persian language -- Persian is spoken in Iran, Afghanistan and Tajikistan.\n"
                "Question: do iran and afghanistan speak the same language?\nAnswer:", c) for c in (" no", " yes")],
              1, ["no", "yes"]),
    # ctx_b capitalised (the rest lower-cased, as str.capitalize does), " [title]" -> ". ", tags dropped,
    # double spaces made single; an ending keeps the space left where its leading tag was
    "hellaswag": ([(HELLASWAG_CONTEXT, "  Close the lid and wait."), (HELLASWAG_CONTEXT, " Scrape the grates gently."),
                   (HELLASWAG_CONTEXT, " Eat the grill."), (HELLASWAG_CONTEXT, " Paint it blue.")],
                  1, [" Close the lid and wait.", "Scrape the grates gently.", "Eat the grill.", "Paint it blue."]),
    "openbookqa": ([("The sun is responsible for", " " + c) for c in ROWS["openbookqa"]["choices"]["text"]], 3,
                   ROWS["openbookqa"]["choices"]["text"]),
    "piqa": ([("Question: When boiling butter, when it's ready, you can\nAnswer:", " Pour it onto a plate"),
              ("Question: When boiling butter, when it's ready, you can\nAnswer:", " Pour it into a jar")], 1,
             ["Pour it onto a plate", "Pour it into a jar"]),
    "siqa": ([("Q: Cameron decided to have a barbecue and gathered her friends together. How would Others feel "
               "as a result?\nA:", " " + c) for c in ("like attending", "like staying home", "a good friend to have")],
             0, ["like attending", "like staying home", "a good friend to have"]),
    # partial scoring: the option fills the blank, the rest of the sentence is what is scored
    "winogrande": ([("Sarah was a much better surgeon than Maria so Sarah", " always got the harder cases."),
                    ("Sarah was a much better surgeon than Maria so Maria", " always got the harder cases.")], 0, None),
}


def write_task(tmp_path, task, rows):
    path = tmp_path / f"{task}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_rows_become_lm_evaluation_harness_requests(task, tmp_path):
    write_task(tmp_path, task, [ROWS[task]])
    [q] = read_task(task, str(tmp_path))
    requests, gold, choices = EXPECTED[task]
    assert q.requests == requests and q.gold == gold and q.choices == choices


def test_boolq_reads_google_boolq_rows_too(tmp_path):
    write_task(tmp_path, "boolq", [{"question": "is the sky green", "answer": False, "passage": "The sky."}])
    [q] = read_task("boolq", str(tmp_path))
    assert q.gold == 0 and q.requests[0] == ("The sky.\nQuestion: is the sky green?\nAnswer:", " no")


@pytest.mark.parametrize("content, message", [
    ('{"question": "q"}\n', "not a allenai/ai2_arc ARC-Easy test row"),                # missing fields
    ("not json\n", "not valid JSON"),
    ('{"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "B"}\n', "not a allenai"),
    ("\n", "has no rows"),
    ('{"question": "q"}\n' + "[" * 100_000 + "\n", r"arc_easy\.jsonl:2: not valid JSON"),  # nested too deeply
])
def test_bad_task_files_are_clear_errors(tmp_path, content, message):
    (tmp_path / "arc_easy.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_task("arc_easy", str(tmp_path))


def test_a_task_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    (tmp_path / "arc_easy.jsonl").write_bytes(json.dumps(ROWS["arc_easy"]).encode() + b'\n{"question": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"arc_easy\.jsonl:2: not valid UTF-8"):
        read_task("arc_easy", str(tmp_path))


# A row that is wrong in one field. Each was read without an error before: a label of 1.7 or true
# as 1, a null question as the text "None". Answer labels must be exact integers (an int, not a bool,
# or a string of digits), text fields strings.
BAD_ROWS = [
    ("piqa", {"label": 1.7}, "label must be an integer, not 1.7"),
    ("piqa", {"label": True}, "label must be an integer, not true"),
    ("piqa", {"goal": None}, "goal must be a string, not null"),
    ("hellaswag", {"label": 1.0}, "label must be an integer, not 1.0"),
    ("siqa", {"label": 2.5}, "label must be an integer, not 2.5"),
    ("siqa", {"context": 5}, "context must be a string, not 5"),
    ("boolq", {"label": 0.9}, "label must be an integer, not 0.9"),
    ("boolq", {"passage": None}, "passage must be a string, not null"),
    ("winogrande", {"answer": 1.0}, "answer must be an integer, not 1.0"),
    ("arc_easy", {"question": None}, "question must be a string, not null"),
    ("arc_easy", {"choices": {"text": ["a", "b"], "label": [1, 2]}, "answerKey": 2}, "label must be a list of strings"),
    ("openbookqa", {"question_stem": None}, "question_stem must be a string, not null"),
    ("openbookqa", {"answerKey": 4}, "answerKey must be a string, not 4"),
]


@pytest.mark.parametrize("task, change, message", BAD_ROWS)
def test_a_gold_label_that_is_not_an_integer_or_a_text_that_is_not_a_string_is_a_row_error(tmp_path, task, change,
                                                                                            message):
    path = write_task(tmp_path, task, [ROWS[task], dict(ROWS[task], **change)])
    with pytest.raises(ValueError) as e:
        read_task(task, str(tmp_path))
    assert str(e.value).startswith(f"{path}, row 2: not a {TASKS[task][1]} row") and message in str(e.value)


def test_google_boolq_answers_must_be_true_or_false(tmp_path):
    write_task(tmp_path, "boolq", [{"question": "is the sky green", "answer": "false", "passage": "The sky."}])
    with pytest.raises(ValueError, match='row 1: .*answer must be true or false, not "false"'):
        read_task("boolq", str(tmp_path))


def test_a_missing_task_file_names_the_path_and_the_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"piqa\.jsonl not found.*ybisk/piqa"):
        read_task("piqa", str(tmp_path))


# -----------------------------------------------------------------------------
# Tokenization of the pair, and log-likelihoods against transformers

def harness_encode_pair(hf_tokenizer, context, continuation):
    """lm-evaluation-harness's rule with transformers' tokenizer: trailing whitespace of the context
    goes to the continuation; the continuation is what the whole string has after the context's ids."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = hf_tokenizer.encode(context + continuation, add_special_tokens=False)
    ctx = hf_tokenizer.encode(context, add_special_tokens=False)
    return ctx, whole[len(ctx):]


def reference_loglikelihood(hf, ctx, cont, block):
    """Summed log-probability of cont after ctx, from transformers' logits on the unpadded sequence."""
    seq = (ctx + cont)[-(block + 1):]
    with torch.no_grad():
        logits = hf(torch.tensor([seq[:-1]])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    n = len(seq) - 1
    return sum(logp[n - len(cont) + j, t].item() for j, t in enumerate(cont))


def test_encode_pair_moves_trailing_space_to_the_continuation(tok, hf_tokenizer):
    ctx, cont = encode_pair(tok, "Question: is it?\nAnswer: ", "yes")
    assert ctx == hf_tokenizer.encode("Question: is it?\nAnswer:") and cont == hf_tokenizer.encode(" yes")
    assert encode_pair(tok, "", "hello") == ([50256], hf_tokenizer.encode("hello"))  # empty context: <|endoftext|>
    for context, continuation in [(c, x) for task in EXPECTED for c, x in EXPECTED[task][0]] + \
            [("def f(x):\n    ", "return x"), ("a\t\t", "b"), ("Answer:", " 3.14159")]:
        assert encode_pair(tok, context, continuation) == harness_encode_pair(hf_tokenizer, context, continuation)


def test_loglikelihoods_equal_transformers(pair, tok, hf_tokenizer, tmp_path):
    hf, model = pair
    for task in TASKS:
        write_task(tmp_path, task, [ROWS[task]])
    questions = [q for task in sorted(TASKS) for q in read_task(task, str(tmp_path))]
    _, records = score_questions(model, tok, questions, batch_size=5)
    got = [ll for r in records for ll in r["loglikelihoods"]]
    expected = [reference_loglikelihood(hf, *harness_encode_pair(hf_tokenizer, c, x), block=256)
                for task in sorted(TASKS) for c, x in EXPECTED[task][0]]
    assert len(got) == len(expected) == 25
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)
    assert len(set(np.round(got, 6))) > 20  # the scores differ from one another: the check has teeth


def test_right_padded_batches_score_as_unpadded_sequences(pair, tok):
    hf, model = pair
    g = torch.Generator().manual_seed(0)
    # lengths from 2 to 300 tokens: the longest are cut to the last 257 tokens (block 256), as the harness does
    requests = []
    for n_ctx, n_cont in [(1, 1), (5, 3), (40, 1), (17, 9), (300, 4), (120, 20), (3, 60), (256, 1)]:
        ids = torch.randint(0, 50295, (n_ctx + n_cont,), generator=g).tolist()
        requests.append((ids[:n_ctx], ids[n_ctx:]))
    one_by_one = [loglikelihoods(model, [r], batch_size=1)[0] for r in requests]
    batched = loglikelihoods(model, requests, batch_size=8)
    for (a, ga), (b, gb) in zip(one_by_one, batched):
        assert a == pytest.approx(b, rel=1e-12) and ga == gb
    expected = [reference_loglikelihood(hf, c, x, block=256) for c, x in requests]
    np.testing.assert_allclose([b for b, _ in batched], expected, rtol=1e-10)


def test_a_continuation_longer_than_the_context_is_an_error(pair):
    _, model = pair
    with pytest.raises(ValueError, match="does not fit"):
        loglikelihoods(model, [([1], list(range(300)))])


# -----------------------------------------------------------------------------
# A model with fixed logits, where the answer is known

class Bigram(torch.nn.Module):
    """Logits that depend on the previous token only: given row by row as log-probabilities (the
    tokens not named share what probability is left), so that every score can be worked out by hand."""

    def __init__(self, rows: dict[int, dict[int, float]], vocab=51200, block_size=64):
        super().__init__()
        self.config = PhiConfig(vocab_size=vocab, n_layer=1, n_head=1, n_embd=8, n_inner=8, rotary_dim=8,
                                block_size=block_size)
        self.rows, self.vocab = rows, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def row(self, prev: int) -> torch.Tensor:
        probs = self.rows.get(prev, {})
        rest = (1.0 - sum(probs.values())) / (self.vocab - len(probs))
        r = torch.full((self.vocab,), math.log(rest), dtype=torch.float64)
        for t, p in probs.items():
            r[t] = math.log(p)
        return r

    def forward(self, idx):
        return torch.stack([torch.stack([self.row(int(t)) for t in seq]) for seq in idx])


def test_fixed_logits_give_the_hand_computed_scores_and_choices(tok):
    [cat], [elephant], [yes], [no], [indeed] = (tok.encode(w) for w in (" cat", " elephant", " yes", " no", " indeed"))
    [colon] = tok.encode(":")
    # after ":" the model says " cat" with p = e^-1, " elephant" e^-2, " yes" 0.25, " no" 0.1;
    # after " yes", " indeed" with p = 0.5
    model = Bigram({colon: {cat: math.exp(-1), elephant: math.exp(-2), yes: 0.25, no: 0.1}, yes: {indeed: 0.5}})
    questions = [
        # acc picks " cat" (-1 > -2); per character " elephant" wins (-2/8 > -1/3)
        Question([("Animal:", " cat"), ("Animal:", " elephant")], 1, ["cat", "elephant"]),
        # two tokens: log 0.25 + log 0.5 = log 0.125 > log 0.1
        Question([("Sure:", " yes indeed"), ("Sure:", " no")], 0, ["yes indeed", "no"]),
    ]
    metrics, records = score_questions(model, tok, questions, batch_size=3)
    assert records[0]["loglikelihoods"] == pytest.approx([-1.0, -2.0], abs=1e-12)
    assert (records[0]["pred"], records[0]["pred_norm"]) == (0, 1)
    assert (records[0]["acc"], records[0]["acc_norm"]) == (0.0, 1.0)
    assert records[1]["loglikelihoods"] == pytest.approx([math.log(0.125), math.log(0.1)], abs=1e-12)
    assert (records[1]["pred"], records[1]["pred_norm"]) == (0, 0)  # per character: -2.08/10 > -2.30/2
    assert metrics == {"n": 2, "acc": 0.5, "acc_norm": 1.0}


def test_acc_norm_divides_by_characters_as_lm_evaluation_harness_does(tok):
    # lm-evaluation-harness divides by len(choice), in characters. "na\u00efve" is 5 characters and 6
    # bytes, "plain" 5 and 5. With log-likelihoods -1.2 and -1.05, per character "plain" wins
    # (-0.24 < -0.21); per byte "na\u00efve" would win (-0.2 > -0.21).
    [colon] = tok.encode(":")
    a, b = tok.encode(" na\u00efve"), tok.encode(" plain")
    rows = {colon: {a[0]: math.exp(-1.2), b[0]: math.exp(-1.05)}}
    for seq in (a, b):  # the later tokens of each choice are certain
        for prev, nxt in zip(seq, seq[1:]):
            assert prev not in rows
            rows[prev] = {nxt: 1.0 - 1e-15}
    assert a[0] != b[0]
    question = Question([(":", " na\u00efve"), (":", " plain")], 0, ["na\u00efve", "plain"])
    [record] = score_questions(Bigram(rows), tok, [question])[1]
    assert record["loglikelihoods"] == pytest.approx([-1.2, -1.05], abs=1e-9)
    assert (record["pred"], record["pred_norm"], record["acc_norm"]) == (1, 1, 0.0)


# -----------------------------------------------------------------------------
# Perplexity and bits per byte

def test_token_bytes_add_up_to_the_text_length(tok):
    lengths = token_bytes(tok, 51200)
    for text in ["hello world", "def f(x):\n        return x  # caf\u00e9 \u2603\n", "\t\tdata\n" * 3]:
        assert int(lengths[tok.encode(text)].sum()) == len(text.encode("utf-8"))
    assert lengths[50256] == 0 and lengths[50300] == 0  # <|endoftext|> and padding rows hold no text


def test_uniform_model_has_perplexity_vocab_size(tok, tmp_path):
    (tmp_path / "t.txt").write_text("hello world")
    tokens = read_tokens(str(tmp_path / "t.txt"), tok)
    assert tokens.tolist() == [50256] + tok.encode("hello world")
    r = perplexity(Bigram({}), tokens, token_bytes(tok, 51200))
    assert r["tokens"] == 2 and r["bytes"] == 11
    assert r["perplexity"] == pytest.approx(51200, rel=1e-12)
    assert r["bits_per_byte"] == pytest.approx(2 * math.log2(51200) / 11, rel=1e-12)


def test_a_ppl_text_file_that_is_not_utf8_names_the_file_and_line(tok, tmp_path):
    (tmp_path / "t.txt").write_bytes(b"hello\nworld\n" * 5000 + b"caf\xe9\n")
    with pytest.raises(ValueError, match=r"t\.txt:10001: not valid UTF-8"):
        read_tokens(str(tmp_path / "t.txt"), tok)


def test_perplexity_equals_transformers_loss_in_windows(pair, tok, tmp_path):
    hf, model = pair
    text = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
            "nothing to do: once or twice she had peeped into the book her sister was reading. ") * 14
    (tmp_path / "alice.txt").write_text(text)
    tokens = read_tokens(str(tmp_path / "alice.txt"), tok)
    assert len(tokens) > 2 * 256 + 1  # three windows of the 256-token context
    r = perplexity(model, tokens, token_bytes(tok, 51200))
    nll = 0.0
    for start in range(0, len(tokens) - 1, 256):  # the windows, by hand: 256 targets each, the last shorter
        window = tokens[start:start + 257]
        with torch.no_grad():
            logits = hf(window[None, :-1]).logits[0]
        nll += F.cross_entropy(logits.double(), window[1:], reduction="sum").item()
    assert r["tokens"] == len(tokens) - 1 and r["bytes"] == len(text.encode())
    assert r["nll"] == pytest.approx(nll, rel=1e-10)
    assert r["perplexity"] == pytest.approx(math.exp(nll / (len(tokens) - 1)), rel=1e-10)
    assert r["bits_per_byte"] == pytest.approx(nll / math.log(2) / len(text.encode()), rel=1e-10)
    # --limit 1: the first window only
    assert perplexity(model, tokens, token_bytes(tok, 51200), limit=1)["tokens"] == 256


def test_perplexity_on_a_token_memmap(pair, tok, tmp_path):
    hf, model = pair
    docs = ["The cat sat.", "A dog ran off to the park, fast."]
    ids = [50256] + tok.encode(docs[0]) + [50256] + tok.encode(docs[1])
    np.array(ids, dtype=np.uint16).tofile(tmp_path / "val.bin")
    tokens = read_tokens(str(tmp_path / "val.bin"), tok)
    assert tokens.tolist() == ids
    r = perplexity(model, tokens, token_bytes(tok, 51200))
    with torch.no_grad():
        logits = hf(torch.tensor([ids[:-1]])).logits[0].double()
    nll = -torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()
    assert r["tokens"] == len(ids) - 1 and r["bytes"] == sum(len(d) for d in docs)  # separators hold no bytes
    assert r["nll"] == pytest.approx(nll, rel=1e-10)


def test_bad_token_files_are_clear_errors(pair, tok, tmp_path):
    _, model = pair
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not a uint16 token file"):
        read_tokens(str(tmp_path / "odd.bin"), tok)
    np.array([1, 2, 60000], dtype=np.uint16).tofile(tmp_path / "big.bin")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        perplexity(model, read_tokens(str(tmp_path / "big.bin"), tok), token_bytes(tok, 51200))


# -----------------------------------------------------------------------------
# HumanEval completions, against transformers' generate

def test_greedy_completion_equals_transformers_generate_cut_at_the_stops(pair, tok, hf_tokenizer):
    hf, model = pair
    for problem in read_humaneval()[:2]:
        ids = hf_tokenizer.encode(problem["prompt"])
        out = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=50256, pad_token_id=0)
        assert_greedy_well_posed(hf, out, len(ids))
        text = hf_tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
        cut = min([i for i in (text.find(s) for s in ("\nclass", "\ndef", "\n#", "\nif", "\nprint")) if i >= 0]
                  + [len(text)])
        assert complete(model, tok, problem["prompt"], n=1, temperature=0.0, top_p=None, max_new_tokens=24) == [text[:cut]]


# -----------------------------------------------------------------------------
# MMLU: few-shot prompts, per-subject limits, and the two averages

def mmlu_row(subject, question, choices, answer):
    return {"question": question, "subject": subject, "choices": choices, "answer": answer}


MMLU_DEV = [  # cais/mmlu's dev rows, two subjects interleaved, the first subject's rows in order
    mmlu_row("high_school_biology", " Which organelle makes ATP?\n", ["Nucleus", "Mitochondrion", "Ribosome", "Golgi"], 1),
    mmlu_row("astronomy", "What is the closest star to Earth?", ["Sirius", "Vega", "Proxima Centauri", "The Sun"], 3),
    mmlu_row("high_school_biology", "DNA is made of", ["amino acids", "lipids", "sugars only", "nucleotides"], 3),
    mmlu_row("high_school_biology", "Never shown with 2 shots", ["a", "b", "c", "d"], 0),
    mmlu_row("astronomy", "How many planets orbit the Sun?", ["7", "8", "9", "10"], 1),
]
MMLU_TEST = [
    mmlu_row("high_school_biology", "Which molecule carries amino acids to the ribosome?  ",
             ["mRNA", "tRNA", "rRNA", "DNA"], 1),
    mmlu_row("astronomy", "Which planet is largest?", ["Earth", "Mars", "Jupiter", "Venus"], 2),
    mmlu_row("high_school_biology", "Second biology question", ["w", "x", "y", "z"], 0),
]

# lm-evaluation-harness's mmlu prompt, 2-shot, written out by hand: the subject's description, the
# first two dev rows of the subject (questions stripped) with their letters, then the question.
MMLU_BIOLOGY_PROMPT = (
    "The following are multiple choice questions (with answers) about high school biology.\n\n"
    "Which organelle makes ATP?\nA. Nucleus\nB. Mitochondrion\nC. Ribosome\nD. Golgi\nAnswer: B\n\n"
    "DNA is made of\nA. amino acids\nB. lipids\nC. sugars only\nD. nucleotides\nAnswer: D\n\n"
    "Which molecule carries amino acids to the ribosome?\nA. mRNA\nB. tRNA\nC. rRNA\nD. DNA\nAnswer:")


def write_mmlu(tmp_path, test=MMLU_TEST, dev=MMLU_DEV):
    tmp_path.mkdir(exist_ok=True)
    write_task(tmp_path, "mmlu", test)
    if dev is not None:
        write_task(tmp_path, "mmlu_dev", dev)
    return str(tmp_path)


def test_mmlu_prompts_are_lm_evaluation_harness_few_shot_prompts(tmp_path):
    subjects, questions = read_mmlu(write_mmlu(tmp_path), shots=2)
    assert subjects == ["high_school_biology", "astronomy", "high_school_biology"]
    assert questions[0].requests == [(MMLU_BIOLOGY_PROMPT, " A"), (MMLU_BIOLOGY_PROMPT, " B"),
                                     (MMLU_BIOLOGY_PROMPT, " C"), (MMLU_BIOLOGY_PROMPT, " D")]
    assert [q.gold for q in questions] == [1, 2, 0] and questions[0].choices is None  # acc only, as the harness
    assert questions[1].requests[0][0] == (
        "The following are multiple choice questions (with answers) about astronomy.\n\n"
        "What is the closest star to Earth?\nA. Sirius\nB. Vega\nC. Proxima Centauri\nD. The Sun\nAnswer: D\n\n"
        "How many planets orbit the Sun?\nA. 7\nB. 8\nC. 9\nD. 10\nAnswer: B\n\n"
        "Which planet is largest?\nA. Earth\nB. Mars\nC. Jupiter\nD. Venus\nAnswer:")
    # zero-shot needs no dev file
    _, [q, *_] = read_mmlu(write_mmlu(tmp_path / "zero", dev=None), shots=0)
    assert q.requests[0][0] == ("The following are multiple choice questions (with answers) about high school "
                                "biology.\n\nWhich molecule carries amino acids to the ribosome?\nA. mRNA\nB. tRNA\n"
                                "C. rRNA\nD. DNA\nAnswer:")


def test_mmlu_limit_takes_the_first_questions_of_each_subject(tmp_path):
    subjects, _ = read_mmlu(write_mmlu(tmp_path), limit=1)
    assert subjects == ["high_school_biology", "astronomy"]


@pytest.mark.parametrize("dev, test, message", [
    (MMLU_DEV[:2], MMLU_TEST, "mmlu_dev.jsonl has 1 rows of subject 'high_school_biology'; 2-shot prompts need 2"),
    (MMLU_DEV, [dict(MMLU_TEST[0], answer="B")], 'row 1: not a cais/mmlu all test row (ValueError: answer must be an integer, not "B")'),
    (MMLU_DEV, [MMLU_TEST[0], dict(MMLU_TEST[1], answer=4)], "row 2: not a cais/mmlu all test row (ValueError: answer must be 0, 1, 2 or 3, not 4)"),
    (MMLU_DEV, [dict(MMLU_TEST[0], choices=["a", "b", "c"])], "choices must be 4 strings, not 3"),
    ([dict(MMLU_DEV[0], subject=None)], MMLU_TEST, "mmlu_dev.jsonl, row 1: not a cais/mmlu all dev row (ValueError: subject must be a string"),
])
def test_bad_mmlu_files_are_clear_errors(tmp_path, dev, test, message):
    with pytest.raises(ValueError) as e:
        read_mmlu(write_mmlu(tmp_path, test, dev), shots=2)
    assert message in str(e.value)


def test_mmlu_reports_the_micro_and_the_macro_average():
    # biology: 2 of 3 right; astronomy: 1 of 1. Over questions 3/4; over subjects (2/3 + 1) / 2.
    subjects = ["bio", "bio", "astro", "bio"]
    records = [{"acc": 1.0}, {"acc": 0.0}, {"acc": 1.0}, {"acc": 1.0}]
    got = mmlu_averages(subjects, records)
    assert got["acc"] == 0.75 and got["acc_macro"] == pytest.approx(5 / 6, abs=1e-15)
    assert got["acc_by_subject"] == {"astro": 1.0, "bio": pytest.approx(2 / 3, abs=1e-15)}
    assert (got["n"], got["subjects"]) == (4, 2)


def test_mmlu_picks_the_most_likely_letter(tok, tmp_path):
    # after ":" the model says " C" with p = 0.5 and every other letter with p = 0.1
    [colon] = tok.encode(":")
    letters = [tok.encode(" " + x)[0] for x in "ABCD"]
    model = Bigram({colon: {letters[0]: 0.1, letters[1]: 0.1, letters[2]: 0.5, letters[3]: 0.1}})
    subjects, questions = read_mmlu(write_mmlu(tmp_path), shots=0)  # (short prompts: the Bigram model is slow)
    metrics, records = score_questions(model, tok, questions)
    assert [r["pred"] for r in records] == [2, 2, 2]  # right on astronomy only
    assert records[0]["loglikelihoods"] == pytest.approx([math.log(0.1), math.log(0.1), math.log(0.5), math.log(0.1)])
    got = mmlu_averages(subjects, records)
    assert (got["acc"], got["acc_macro"]) == (pytest.approx(1 / 3), pytest.approx(0.5))


# -----------------------------------------------------------------------------
# SQuAD: the prompt, and exact match and F1 as the official v1.1 script computes them

SQUAD_ROW = {"id": "56be4db0acb8001400a502ec", "title": "Super_Bowl_50",
             "context": "Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers.",
             "question": "Which NFL team won Super Bowl 50?",
             "answers": {"text": ["Denver Broncos", "Denver Broncos", "Denver Broncos"], "answer_start": [177, 177, 177]}}


def test_squad_rows_become_lm_evaluation_harness_prompts(tmp_path):
    write_task(tmp_path, "squad", [SQUAD_ROW])
    [item] = read_squad(str(tmp_path))
    assert item["prompt"] == ("Title: Super_Bowl_50\n\nBackground: Super Bowl 50 was an American football game. The "
                              "Denver Broncos defeated the Carolina Panthers.\n\nQuestion: Which NFL team won Super "
                              "Bowl 50?\n\nAnswer:")
    assert item["answers"] == ["Denver Broncos"] * 3 and item["id"] == "56be4db0acb8001400a502ec"


@pytest.mark.parametrize("change, message", [
    ({"answers": {"text": [], "answer_start": []}}, "an unanswerable question of SQuAD v2"),
    ({"question": None}, "question must be a string, not null"),
    ({"answers": {"text": "Denver"}}, "text must be a list of strings"),
])
def test_bad_squad_rows_are_row_errors(tmp_path, change, message):
    write_task(tmp_path, "squad", [SQUAD_ROW, dict(SQUAD_ROW, **change)])
    with pytest.raises(ValueError) as e:
        read_squad(str(tmp_path))
    assert str(e.value).startswith(f"{tmp_path / 'squad.jsonl'}, row 2: not a rajpurkar/squad validation row")
    assert message in str(e.value)


@pytest.mark.parametrize("text, normalized", [
    ("The Denver Broncos!", "denver broncos"),          # case, an article, punctuation
    ("  an   apple,  a pear  ", "apple pear"),          # articles and runs of whitespace
    ("Theatre of the Absurd", "theatre of absurd"),     # "the" inside a word stays
    ("A.D. 1,000", "ad 1000"),                          # punctuation inside words and numbers goes
    ("well-known (1990s)", "wellknown 1990s"),
    ("Paris \u2013 France", "paris \u2013 france"),      # not ASCII punctuation: kept, as the official script keeps it
    ("THE", ""),
])
def test_squad_normalization_is_the_official_one(text, normalized):
    assert squad_normalize(text) == normalized


@pytest.mark.parametrize("prediction, answers, exact, f1", [
    (" Denver Broncos", ["Denver Broncos"], 1.0, 1.0),
    ("the Denver Broncos.", ["Denver Broncos", "Broncos"], 1.0, 1.0),
    # pred {cat, sat, on, mat}, gold {cat, on, mat}: precision 3/4, recall 1, F1 = 2 * 0.75 / 1.75
    ("the cat sat on the mat", ["cat on a mat"], 0.0, 6 / 7),
    # the best gold answer counts: "Broncos" gives precision 1/2, recall 1, F1 2/3; "Carolina Panthers" 0
    ("Denver Broncos", ["Carolina Panthers", "Broncos"], 0.0, 2 / 3),
    # tokens count with multiplicity: three b's against one, 1 in common; precision 1/3, recall 1
    ("b b b", ["b"], 0.0, 0.5),
    ("", ["Denver Broncos"], 0.0, 0.0),
    ("The", ["a"], 1.0, 0.0),   # both normalize to "": equal, but no tokens to share (the official script's v1.1 rule)
])
def test_squad_exact_match_and_f1_by_hand(prediction, answers, exact, f1):
    assert squad_scores(prediction, answers) == (exact, pytest.approx(f1, abs=1e-15))


# -----------------------------------------------------------------------------
# GSM8K and SQuAD generations, against transformers' generate

def hf_greedy_text(hf, hf_tokenizer, prompt, max_new_tokens=24):
    ids = hf_tokenizer.encode(prompt)
    out = hf.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=50256,
                      pad_token_id=0)
    assert_greedy_well_posed(hf, out, len(ids))
    return hf_tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)


def cut(text, stops):
    return text[:min([i for i in (text.find(s) for s in stops) if i >= 0] + [len(text)])]


def test_greedy_gsm8k_programs_equal_transformers_generate_cut_at_the_stops(pair, tok, hf_tokenizer, tmp_path):
    hf, model = pair
    write_task(tmp_path, "gsm8k", [
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3+4=7\n#### 7"}])
    [problem] = read_gsm8k(str(tmp_path))
    expected = cut(hf_greedy_text(hf, hf_tokenizer, problem["prompt"]), ("\nclass", "\ndef", "\n#", "\nif", "\nprint"))
    assert complete(model, tok, problem["prompt"], n=1, temperature=0.0, top_p=None, max_new_tokens=24) == [expected]


def test_greedy_squad_answers_equal_transformers_generate_cut_at_the_newline(pair, tok, hf_tokenizer, tmp_path):
    hf, model = pair
    write_task(tmp_path, "squad", [SQUAD_ROW])
    [item] = read_squad(str(tmp_path))
    expected = cut(hf_greedy_text(hf, hf_tokenizer, item["prompt"]), ("\n",))
    got = complete(model, tok, item["prompt"], n=1, temperature=0.0, top_p=None, max_new_tokens=24, stops=SQUAD_STOPS)
    assert got == [expected]
