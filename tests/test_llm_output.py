"""`run_lm` writes a Hugging Face model folder that transformers loads back to the same
perplexity, with zeros where the pruning mask says; tiny random Llama and Qwen2 models and
a tiny word-level tokenizer, all built here (no download)."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="needs the qcbo[llm] extra")
pytest.importorskip("gensim", reason="the Wikipedia text needs gensim")
pytest.importorskip("matplotlib")

from pruning.llm.load import load_model  # noqa: E402
from pruning.llm.perplexity import perplexity, token_windows  # noqa: E402
from pruning.llm.prune import LMPruneConfig, prune_lm  # noqa: E402
from pruning.llm.run import LMRunOptions, run_lm, sparsity_table  # noqa: E402
from pruning.llm.text import wiki_text  # noqa: E402
from qcbo.errors import InputError  # noqa: E402

WORDS = ["[UNK]", "[BOS]", "the", "of", "and", "in", "a", "to", "is", "was", ",", ".", "as",
         "by", "for", "on", "with", "he", "it", "that", "from", "his", "at", "are"]
OPTIONS = LMRunOptions(calibration_windows=4, eval_windows=2)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]",
                                                unk_token="[UNK]")


def _save(folder, kind):
    sizes = dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**sizes))
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def _linears(model):
    return {n: m.weight for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in n}


@pytest.mark.parametrize("kind,config", [
    ("llama", LMPruneConfig(method="alps", density=0.3)),
    ("qwen2", LMPruneConfig(method="sparsegpt", pattern=(2, 4), sparsegpt_blocksize=16)),
])
def test_pruned_folder_reloads_to_the_reported_perplexity(tmp_path, kind, config):
    folder = _save(tmp_path / kind, kind)
    out = tmp_path / "out"
    report = run_lm(str(folder), config, out, options=OPTIONS)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "report.json",
                 "sparsity.json", "density.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["perplexity"] == report["perplexity"]
    umask = os.umask(0o022)
    os.umask(umask)
    for path in out.iterdir():  # readable by collaborators, as a plain open() would make it
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(reloaded).__name__ == ("LlamaForCausalLM" if kind == "llama"
                                       else "Qwen2ForCausalLM")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    evaluation = token_windows(tok, wiki_text("evaluation"), 512, OPTIONS.eval_windows)
    assert perplexity(reloaded, evaluation) == pytest.approx(report["perplexity"], abs=0.01)
    assert report["perplexity"] != pytest.approx(report["perplexity_dense"], abs=1e-3)

    # zeros exactly where the mask of the same pruning, done here, says
    model, tokenizer = load_model(str(folder))
    calibration = token_windows(tokenizer, wiki_text("calibration"), 512, 4)
    prune_lm(model, calibration, config)
    want, got = _linears(model), _linears(reloaded)
    assert set(want) == set(got) and len(got) == 14
    sparsity = json.loads((out / "sparsity.json").read_text())
    for name, weight in got.items():
        assert torch.equal(weight == 0, want[name] == 0), name
        assert sparsity["layers"][name]["nonzeros"] == int((weight != 0).sum())
        if config.pattern:
            assert torch.all((weight.view(weight.shape[0], -1, 4) != 0).sum(-1) <= 2)
    if config.pattern is None:
        assert sparsity["total"]["density"] == pytest.approx(0.3, abs=0.01)
    assert "total" in sparsity_table(sparsity)


def test_failed_run_leaves_the_earlier_folder_and_no_temporary(tmp_path, monkeypatch):
    folder = _save(tmp_path / "llama", "llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")  # an earlier run's folder
    (out / "sparsity.json").write_text("{}")
    (out / "keep.txt").write_text("earlier run")

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_lm(str(folder), LMPruneConfig(method="wanda", density=0.5), out, options=OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "out"]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "report.json",
                                                     "sparsity.json"]
    # a folder that is not a run's output is refused before any work, and kept
    (out / "report.json").unlink()
    (out / "sparsity.json").unlink()
    with pytest.raises(InputError, match=r"holds files of something else \(keep.txt\)"):
        run_lm(str(folder), LMPruneConfig(method="wanda", density=0.5), out, options=OPTIONS)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_inputs_are_one_line_input_errors(tmp_path):
    folder = _save(tmp_path / "llama", "llama")
    bad = [
        (str(folder), LMPruneConfig(method="nope"), tmp_path / "o", "method must be one of"),
        (str(folder), LMPruneConfig(method="alps", pattern=(3, 5)), tmp_path / "o",
         "divisible by 5"),
        (str(tmp_path / "missing"), LMPruneConfig(), tmp_path / "o", "no such file"),
        (str(folder), LMPruneConfig(), folder / "config.json" / "out", "cannot write"),
    ]
    t5 = tmp_path / "t5"
    transformers.T5Config(vocab_size=24, d_model=8, d_ff=16, num_layers=1,
                          num_heads=2, d_kv=4).save_pretrained(t5)
    bad.append((str(t5), LMPruneConfig(), tmp_path / "o", "cannot load"))
    for spec, config, out, message in bad:
        with pytest.raises(InputError, match=message) as info:
            run_lm(spec, config, out, options=OPTIONS)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "o").exists()


def test_windows_from_a_prefix_equal_the_whole_text_tokenised():
    tok = _tokenizer()
    g = torch.Generator().manual_seed(0)
    paragraphs = [" ".join(WORDS[int(i)] for i in torch.randint(2, len(WORDS), (40,),
                                                                generator=g))
                  for _ in range(300)]
    text = "\n\n".join(paragraphs)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for window, n in [(16, 3), (64, 40), (100, None)]:
        got = token_windows(tok, text, window, n)
        body = window - 1
        count = got.shape[0]
        assert count == (min(n, len(ids) // body) if n else len(ids) // body)
        assert torch.equal(got[:, 1:], torch.tensor(ids[: count * body]).view(count, body))


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from qcbo.cli import main

    folder = _save(tmp_path / "llama", "llama")
    for argv, message in [
        (["--method", "alps", "--pattern", "3:5"], "divisible by 5"),
        (["--model", str(tmp_path / "missing")], "no such file"),
        (["--out", str(folder / "config.json")], "not a folder"),
    ]:
        args = ["prune", "--task", "lm", "--model", str(folder), "--out", str(tmp_path / "o"),
                *argv]
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        # transformers' own loading bars may come first; the error is one line, no traceback
        assert "Traceback" not in err and message in err.strip().splitlines()[-1], err
    assert not (tmp_path / "o").exists()
