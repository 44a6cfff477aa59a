"""sample.py end to end: the streamed text is the decoded greedy tokens of transformers' generate."""

import os
import subprocess
import sys

import pytest
import torch

import eval as ev
import sample
from conftest import ROOT, assert_greedy_well_posed, make_hf_model
from tokenizer import Tokenizer

TINY = dict(vocab_size=51200, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=256)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    hf = make_hf_model(TINY, std=0.1)
    path = tmp_path_factory.mktemp("tiny-phi")
    hf.save_pretrained(path)
    return hf, str(path)


def hf_continuation(hf, ids, n):
    out = hf.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
    assert_greedy_well_posed(hf, out, len(ids))
    return out[0, len(ids):].tolist()


def run(capsys, *argv):
    sample.main(list(argv))
    return capsys.readouterr()


def test_greedy_output_is_transformers_generate_decoded(checkpoint, capsys):
    hf, path = checkpoint
    tok = Tokenizer()
    prompt = "def fibonacci(n):\n    "
    expected = hf_continuation(hf, tok.encode(prompt), 30)
    assert tok.eot_id not in expected  # so the run below does not stop early
    out = run(capsys, "--init_from", path, "--prompt", prompt, "--temperature", "0", "--max_new_tokens", "30")
    assert out.out == prompt + tok.decode(expected) + "\n"
    assert "tokens/s" in out.err


def test_prompt_from_file_and_empty_prompt(checkpoint, capsys, tmp_path):
    hf, path = checkpoint
    tok = Tokenizer()
    (tmp_path / "prompt.txt").write_text("Alice was beginning")
    a = run(capsys, "--init_from", path, "--prompt", f"FILE:{tmp_path / 'prompt.txt'}", "--temperature", "0",
            "--max_new_tokens", "8").out
    b = run(capsys, "--init_from", path, "--prompt", "Alice was beginning", "--temperature", "0",
            "--max_new_tokens", "8").out
    assert a == b and a.startswith("Alice was beginning")
    # an empty prompt starts from <|endoftext|>
    expected = tok.decode(hf_continuation(hf, [tok.eot_id], 8))
    assert run(capsys, "--init_from", path, "--temperature", "0", "--max_new_tokens", "8").out == expected + "\n"


def test_stops_at_endoftext_unless_told_not_to(checkpoint, capsys, tmp_path):
    hf, _ = checkpoint
    with torch.no_grad():
        hf.lm_head.bias[50256] += 100.0  # <|endoftext|> becomes the only likely token
    hf.save_pretrained(tmp_path)
    with torch.no_grad():
        hf.lm_head.bias[50256] -= 100.0
    out = run(capsys, "--init_from", str(tmp_path), "--prompt", "Hi", "--max_new_tokens", "5")
    assert out.out == "Hi\n"
    assert "1 tokens in" in out.err
    out = run(capsys, "--init_from", str(tmp_path), "--prompt", "Hi", "--max_new_tokens", "3", "--ignore_eot")
    assert out.out == "Hi" + "<|endoftext|>" * 3 + "\n"


def test_several_samples_are_seeded(checkpoint, capsys):
    _, path = checkpoint
    args = ["--init_from", path, "--prompt", "The", "--num_samples", "3", "--max_new_tokens", "10",
            "--top_k", "100", "--top_p", "0.9", "--seed", "7"]
    first, second = run(capsys, *args).out, run(capsys, *args).out
    assert first == second and first.count("---------------\n") == 2
    samples = first.split("---------------\n")
    assert len(set(samples)) == 3


def cli(*argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
    (["--max_new_tokens", "x"], "invalid int value"),
    (["--dtype", "int8"], "invalid choice"),
])
def test_bad_flags_give_one_line(argv, message):
    result = cli(*argv)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_bad_checkpoints_and_prompts_give_one_line(checkpoint, tmp_path):
    _, path = checkpoint
    for argv, message in [
        (["--init_from", str(tmp_path / "none.pt")], "does not exist"),
        (["--init_from", path, "--prompt", "FILE:/no/such/file"], "cannot read the prompt file"),
        (["--init_from", path, "--prompt", "word " * 300], "exceed the context of 256"),
        (["--init_from", path, "--device", "gpu"], "--device gpu is not a device"),
    ]:
        result = cli(*argv)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_prompt_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    (tmp_path / "prompt.txt").write_bytes(b"Alice was beginning\nto get very tired \xff\n")
    with pytest.raises(ValueError, match=r"prompt\.txt:2: not valid UTF-8"):
        sample.read_prompt(f"FILE:{tmp_path / 'prompt.txt'}")


def assert_one_line_error(result, message):
    assert result.returncode == 1 and result.stdout == "", (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def test_a_model_whose_vocabulary_cannot_hold_the_tokenizers_ids_is_one_line():
    # phi-test's 512 ids: "hello" is token 31373, an IndexError in the embedding
    assert_one_line_error(cli("--init_from", "scratch:phi-test", "--prompt", "hello", "--max_new_tokens", "10"),
                          "scratch:phi-test: the model's vocabulary has 512 ids, fewer than the tokenizer's 50295")


def test_a_prompt_that_does_not_fit_prints_nothing(checkpoint):
    _, path = checkpoint
    assert_one_line_error(cli("--init_from", path, "--prompt", " ".join(["word"] * 250), "--max_new_tokens", "10"),
                          "the prompt has 250 tokens and max_new_tokens is 10: together they exceed the context of 256")


@pytest.mark.parametrize("device, message", [
    ("meta", "--device meta"),
    ("mps", "--device mps"),
    ("xpu", "--device xpu is not supported; use cpu, cuda, cuda:N or mps"),
])
def test_a_device_that_cannot_run_the_model_is_named_not_blamed_on_the_weights(checkpoint, device, message):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    result = cli("--init_from", checkpoint[1], "--device", device)
    assert_one_line_error(result, message)
    assert "corrupt" not in result.stderr


@pytest.mark.parametrize("script, flag", [(sample, "--temperature"), (sample, "--top_p"),
                                          (ev, "--temperature"), (ev, "--top_p"), (ev, "--timeout")])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_float_flags_must_be_finite(script, flag, value, capsys):
    # nan passes every < and > check: --temperature nan reached torch.multinomial
    with pytest.raises(SystemExit) as e:
        script.parse_args([f"{flag}={value}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"argument {flag}: must be a finite number, got '{value}'" in err, err
