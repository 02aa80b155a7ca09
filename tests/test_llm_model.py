"""pruning.llm on a tiny random LlamaForCausalLM (no download): layer-wise pruning,
Fisher captures, perplexity, loading errors and the CLI configuration."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="needs the qcbo[llm] extra")

from pruning.llm.icbs import LMICBSConfig, capture_fisher_inputs  # noqa: E402
from pruning.llm.layerwise import decoder_layers, prunable_linears, run_layerwise  # noqa: E402
from pruning.llm.perplexity import perplexity, token_windows  # noqa: E402
from pruning.llm.prune import LMPruneConfig, layer_densities, prune_lm  # noqa: E402
from qcbo.errors import BackendUnavailableError, InputError  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, 96, (8, 24), generator=g)
    evals = torch.randint(0, 96, (4, 24), generator=g)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return model, state, calib, evals


def test_layerwise_statistics_match_a_full_forward(tiny):
    """Every Linear's XᵀX (q/k/v and gate/up share one product per batch) equals its own
    inputs' Gram matrix from a plain forward of the model."""
    model, state, calib, _ = tiny
    model.load_state_dict(state)
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [lin.register_forward_hook(
        lambda _m, a, _o, key=f"{i}.{name}": seen.setdefault(key, []).append(
            a[0].reshape(-1, a[0].shape[-1])))
        for i, block in enumerate(decoder_layers(model))
        for name, lin in prunable_linears(block).items()]
    with torch.no_grad():
        for start in range(0, 8, 4):
            model(input_ids=calib[start:start + 4])
    for handle in handles:
        handle.remove()
    got = {}

    def pruner(index, linears, stats):
        got[index] = stats

    run_layerwise(model, calib, pruner, batch_size=4)
    assert set(got) == {0, 1}
    assert len(seen) == 2 * 7
    for key, xs in seen.items():
        index, name = key.split(".", 1)
        X = torch.cat(xs).double()
        stats = got[int(index)][name]
        assert stats.tokens == X.shape[0]
        assert torch.allclose(stats.xtx, X.T @ X, rtol=1e-4, atol=1e-4), key


def test_layerwise_statistics_see_an_input_changed_in_place():
    """A Linear fed the tensor another Linear saw, after an in-place change, gets the
    Gram matrix of the changed values, not the shared product."""
    from types import SimpleNamespace

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

        def forward(self, h, **_kw):
            x = h.clone()
            y = self.a(x)
            x.mul_(2.0)
            return torch.cat([y + self.b(x), h[..., 3:]], dim=-1)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(num_hidden_layers=1)
            self.emb = torch.nn.Embedding(10, 4)
            self.layers = torch.nn.ModuleList([Block()])

        def forward(self, input_ids, **_kw):
            h = self.emb(input_ids)
            for layer in self.layers:
                h = layer(h)
            return h

    torch.manual_seed(0)
    model = Model()
    windows = torch.randint(0, 10, (4, 6))
    got = {}
    run_layerwise(model, windows, lambda i, linears, stats: got.update(stats), batch_size=2)
    X = model.emb(windows).reshape(-1, 4).detach().double()
    assert torch.allclose(got["a"].xtx, X.T @ X, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got["b"].xtx, 4.0 * (X.T @ X), rtol=1e-5, atol=1e-5)


def _inputs_by_linear(model, calib):
    """Every prunable Linear's inputs (tokens, d_in) float64 from a plain forward."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [lin.register_forward_hook(
        lambda _m, a, _o, key=f"{i}.{name}": seen.setdefault(key, []).append(
            a[0].reshape(-1, a[0].shape[-1]).double()))
        for i, block in enumerate(decoder_layers(model))
        for name, lin in prunable_linears(block).items()]
    with torch.no_grad():
        for start in range(0, calib.shape[0], 4):
            model(input_ids=calib[start:start + 4])
    for handle in handles:
        handle.remove()
    return {key: torch.cat(xs) for key, xs in seen.items()}


def test_dense_targets_prune_group_by_group_with_the_dense_cross_products(tiny):
    """dense_targets: prune_block sees q/k/v, o, gate/up, down in turn; each group's XᵀX is
    from its inputs after the groups before it were pruned (= its inputs in the final
    pruned model) and its cross product pairs them with the dense model's inputs."""
    model, state, calib, _ = tiny
    model.load_state_dict(state)
    dense_inputs = _inputs_by_linear(model, calib)
    calls, got = [], {}

    def pruner(index, linears, stats):
        calls.append((index, sorted(linears)))
        for name, lin in linears.items():
            got[f"{index}.{name}"] = stats[name]
            keep = lin.weight.abs() >= lin.weight.abs().median()
            lin.weight.mul_(keep)

    run_layerwise(model, calib, pruner, batch_size=4, dense_targets=True)
    attn = ["self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj"]
    groups = [attn, ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    assert calls == [(i, g) for i in range(2) for g in groups]
    pruned_inputs = _inputs_by_linear(model, calib)
    for key, stats in got.items():
        X, Xd = pruned_inputs[key], dense_inputs[key]
        assert stats.tokens == X.shape[0]
        assert torch.allclose(stats.xtx, X.T @ X, rtol=1e-4, atol=1e-4), key
        assert torch.allclose(stats.cross, X.T @ Xd, rtol=1e-4, atol=1e-4), key
        if key.startswith("0.self_attn.q"):  # the model's first inputs: no error upstream
            assert torch.allclose(stats.cross, stats.xtx)
        if key.startswith("1."):
            assert not torch.allclose(stats.cross, stats.xtx, rtol=1e-3, atol=1e-3), key


def test_dense_target_weights_carry_the_dense_target_objective():
    """For every ŵ: ‖X̄w − Xŵ‖²/N + λ‖ŵ − w‖² = (ŵ − w*)ᵀ(H + λI)(ŵ − w*) + a constant,
    λ = ridge·mean(diag H); with X̄ = X, W* = W. A dead input gets w* = 0 (the methods
    prune dead inputs first, so ŵ = 0 there)."""
    from pruning.llm.layerwise import LinearStats
    from pruning.llm.prune import dense_target_weights

    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 6, generator=g, dtype=torch.float64)
    X[:, 4] = 0.0  # a dead input
    Xd = X + 0.3 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    W = torch.randn(3, 6, generator=g, dtype=torch.float64)
    ridge = 0.5
    stats = LinearStats(X.T @ X, 40, cross=X.T @ Xd)
    Ws = dense_target_weights(W, stats, ridge)
    H = X.T @ X / 40
    H[4, 4] = 1.0
    lam = ridge * H.diagonal().mean()
    Hl = H + lam * torch.eye(6, dtype=torch.float64)
    gaps = []
    for _ in range(5):
        What = torch.randn(3, 6, generator=g, dtype=torch.float64)
        What[:, 4] = 0.0
        target = ((Xd @ W.T - X @ What.T) ** 2).sum() / 40 + lam * ((What - W) ** 2).sum()
        model = torch.einsum("ri,ij,rj->", What - Ws, Hl, What - Ws)
        gaps.append(float(target - model))
    assert max(gaps) - min(gaps) < 1e-9
    assert torch.all(Ws[:, 4] == 0)
    same = dense_target_weights(W, LinearStats(X.T @ X, 40, cross=X.T @ X), ridge)
    keep = torch.ones(6, dtype=torch.bool)
    keep[4] = False
    assert torch.allclose(same[:, keep], W[:, keep], atol=1e-12)
    with pytest.raises(ValueError, match="cross products"):
        dense_target_weights(W, LinearStats(X.T @ X, 40), ridge)


@pytest.mark.parametrize("method,icbs", [
    ("wanda", None), ("sparsegpt", None), ("alps", None),
    ("icbs", LMICBSConfig(backend="exact", block_size=8, steps_per_layer=2, refit=True))])
def test_prune_lm_with_dense_targets(tiny, method, icbs):
    model, state, calib, evals = tiny
    model.load_state_dict(state)
    config = LMPruneConfig(method=method, density=0.5, icbs=icbs or LMICBSConfig(),
                           targets="dense")
    report = prune_lm(model, calib, config)
    assert report["targets"] == "dense"
    # ALPS and iCBS report per-Linear facts (the tiny model has 14 Linears); Wanda and
    # SparseGPT none.
    assert len(report["layers"]) == (14 if method in ("alps", "icbs") else 0)
    for value in layer_densities(model).values():
        assert value == pytest.approx(0.5, abs=0.02)
    assert math.isfinite(perplexity(model, evals))


def test_dense_targets_configuration_errors():
    with pytest.raises(ValueError, match="layer-wise method"):
        LMPruneConfig(method="magnitude", targets="dense").validate()
    with pytest.raises(ValueError, match="layer-wise method"):
        LMPruneConfig(method="icbs", targets="dense",
                      icbs=LMICBSConfig(objective="fisher")).validate()
    with pytest.raises(ValueError, match="targets must be"):
        LMPruneConfig(targets="outputs").validate()
    with pytest.raises(ValueError, match="target_ridge"):
        LMPruneConfig(targets="dense", target_ridge=0.0).validate()


@pytest.mark.parametrize("method,pattern,icbs", [
    ("magnitude", None, None), ("wanda", None, None), ("sparsegpt", None, None),
    ("wanda", (2, 4), None), ("sparsegpt", (2, 4), None), ("alps", None, None),
    ("alps", (2, 4), None),
    ("icbs", None, LMICBSConfig(backend="exact", block_size=8, steps_per_layer=3)),
    ("icbs", None, LMICBSConfig(backend="exact", block_size=8, steps_per_layer=3, refit=True)),
    ("icbs", (2, 4), LMICBSConfig(backend="exact", block_size=8, steps_per_layer=2, refit=True)),
    ("icbs", None, LMICBSConfig(backend="exact", objective="fisher", block_size=8,
                                steps_per_layer=2, fisher_samples=4, fisher_window=16)),
])
def test_prune_lm_reaches_the_density(tiny, method, pattern, icbs):
    model, state, calib, evals = tiny
    model.load_state_dict(state)
    config = LMPruneConfig(method=method, density=0.5, pattern=pattern,
                           icbs=icbs or LMICBSConfig())
    report = prune_lm(model, calib, config)
    dens = layer_densities(model)
    assert len(dens) == 14
    for value in dens.values():
        assert value == pytest.approx(0.5, abs=0.02)
    if pattern:
        for block in decoder_layers(model):
            for lin in prunable_linears(block).values():
                assert ((lin.weight.view(lin.out_features, -1, 4) != 0).sum(-1) <= 2).all()
    if method == "icbs":
        assert report["blocks"]["solved"] > 0
        for layer in report["layers"].values():
            assert layer["error_final"] <= layer["error_init"] * (1 + 1e-9)
    assert math.isfinite(perplexity(model, evals))


def test_icbs_reconstruction_beats_its_wanda_start(tiny):
    """Same calibration, same first block: iCBS only lowers each layer's error."""
    model, state, calib, _ = tiny
    model.load_state_dict(state)
    cfg = LMPruneConfig(method="icbs", density=0.3,
                        icbs=LMICBSConfig(backend="exact", block_size=6, steps_per_layer=6))
    report = prune_lm(model, calib, cfg)
    first = [v for k, v in report["layers"].items() if k.startswith("0.")]
    assert sum(v["error_final"] for v in first) < sum(v["error_init"] for v in first)


def test_icbs_from_alps_lowers_the_error_of_alps_and_of_its_refit(tiny):
    """init="alps": iCBS starts from ALPS's mask and weights; the exact re-fit of that mask
    is no worse than ALPS's PCG weights, and re-fit-aware blocks on every row lower it."""
    model, state, calib, _ = tiny
    model.load_state_dict(state)
    cfg = LMPruneConfig(method="icbs", density=0.3, alps_max_iter=60,
                        icbs=LMICBSConfig(backend="exact", block_size=8, refit=True,
                                          row_rounds=1, init="alps"))
    report = prune_lm(model, calib, cfg)
    assert report["blocks"]["init"] == "alps"
    for layer in report["layers"].values():
        assert layer["pcg_skipped"] and layer["admm_iterations"] >= 1  # the exact re-fit replaces it
        e = layer["errors"]
        assert e["refit"] <= e["start"] * (1 + 1e-6)
        assert e["blocks_refit"] <= e["refit"] * (1 + 1e-9)
    totals = report["reconstruction_errors"]
    assert totals["blocks_refit"] < totals["refit"]


def test_fisher_captures_give_the_weight_gradient(tiny):
    model, state, calib, _ = tiny
    model.load_state_dict(state)
    lin = decoder_layers(model)[0].self_attn.q_proj
    windows = calib[:3, :16]
    model.zero_grad(set_to_none=True)
    (x, delta), = capture_fisher_inputs(model, windows, {"q": lin}).values()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    per_sample = torch.einsum("std,ste->sde", delta, x)
    model.zero_grad()
    logits = model(input_ids=windows).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            windows[:, 1:].reshape(-1), reduction="none")
    nll.view(3, -1).mean(dim=1).sum().backward()
    assert torch.allclose(per_sample.sum(0), lin.weight.grad, atol=1e-5)
    for s in range(3):  # and each sample's own gradient
        model.zero_grad()
        logits = model(input_ids=windows[s:s + 1]).logits[0, :-1]
        torch.nn.functional.cross_entropy(logits, windows[s, 1:]).backward()
        assert torch.allclose(per_sample[s], lin.weight.grad, atol=1e-5)
    model.zero_grad()


class _Tok:
    bos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 90 + 2 for c in text]}


def test_windows_and_perplexity_protocol(tiny):
    model, state, _, evals = tiny
    model.load_state_dict(state)
    w = token_windows(_Tok(), "abcdefghij" * 10, 8, 5)
    assert w.shape == (5, 8) and torch.all(w[:, 0] == 1)
    assert w[0, 1:].tolist() == [ord(c) % 90 + 2 for c in "abcdefg"]
    with torch.no_grad():
        logits = model(input_ids=evals).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 96), evals[:, 1:].reshape(-1))
    assert perplexity(model, evals, batch_size=3) == pytest.approx(math.exp(float(nll)), rel=1e-5)


def test_bad_model_arguments(tmp_path):
    from pruning.llm.load import resolve_model

    with pytest.raises(InputError, match="no such file"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(InputError, match="unknown builtin"):
        resolve_model("builtin:nope")
    with pytest.raises(InputError, match="classifiers"):
        resolve_model("zoo:digits-mlp")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    with pytest.raises(InputError, match="not a GGUF file"):
        resolve_model(str(gguf))
    gguf.write_bytes(b"GGUF" + bytes(12))  # the magic; the loader judges the rest
    assert resolve_model(str(gguf)) == (tmp_path, "m.gguf")


def _lm_args(*argv):
    from qcbo.cli import build_parser

    return build_parser().parse_args(["prune", "--task", "lm", *argv])


def test_cli_configuration():
    from qcbo.commands._prune_lm import config_from_args

    cfg, options = config_from_args(_lm_args("--method", "icbs", "--density", "0.3",
                                             "--objective", "reconstruction", "--refit",
                                             "--steps-per-epoch", "10", "--seed", "3"))
    assert cfg.icbs.refit and cfg.icbs.steps_per_layer == 10 and cfg.icbs.seed == 3
    assert not cfg.icbs.fisher_groups and cfg.icbs.blend == 0.0
    fisher, _ = config_from_args(_lm_args("--method", "icbs", "--objective", "fisher",
                                          "--fisher-groups", "--blend", "0.25"))
    assert fisher.icbs.fisher_groups and fisher.icbs.blend == 0.25
    with pytest.raises(InputError, match="blend"):
        config_from_args(_lm_args("--method", "icbs", "--objective", "fisher", "--blend", "2"))
    assert cfg.icbs.backend_options == {"sweeps": 200, "restarts": 4}
    assert cfg.density == 0.3 and options.calibration_windows == 32
    default, _ = config_from_args(_lm_args("--method", "alps", "--pattern", "2:4"))
    assert default.method == "alps" and default.pattern == (2, 4)
    assert default.icbs.block_size == 32 and default.icbs.epochs == 1
    with pytest.raises(InputError, match="pattern"):
        config_from_args(_lm_args("--method", "wanda", "--pattern", "4:2"))
    with pytest.raises(InputError, match="fisher"):
        config_from_args(_lm_args("--method", "icbs", "--objective", "fisher",
                                  "--pattern", "2:4"))
    with pytest.raises(InputError, match="seed"):
        config_from_args(_lm_args("--seed", "-3"))
    with pytest.raises(InputError, match="drop --density"):
        config_from_args(_lm_args("--method", "wanda", "--pattern", "2:4", "--density", "0.3"))
    agreed, _ = config_from_args(_lm_args("--method", "wanda", "--pattern", "2:4",
                                          "--density", "0.5"))
    assert agreed.pattern == (2, 4)
    # -o overrides one key of the sa preset and keeps the other.
    tuned, _ = config_from_args(_lm_args("--method", "icbs", "-o", "restarts=8"))
    assert tuned.icbs.backend_options == {"sweeps": 200, "restarts": 8}
    other, _ = config_from_args(_lm_args("--method", "icbs", "--backend", "tabu",
                                         "-o", "restarts=2"))
    assert other.icbs.backend_options == {"restarts": 2}
    assert default.icbs.loss_check and default.icbs.row_rounds == 0
    rounds, _ = config_from_args(_lm_args("--method", "icbs", "--objective", "reconstruction",
                                          "--refit", "--row-rounds", "2"))
    assert rounds.icbs.row_rounds == 2
    with pytest.raises(InputError, match="--row-rounds applies"):
        config_from_args(_lm_args("--method", "icbs", "--objective", "fisher",
                                  "--row-rounds", "1"))
    unchecked, _ = config_from_args(_lm_args("--method", "icbs", "--objective", "fisher",
                                             "--no-loss-check"))
    assert not unchecked.icbs.loss_check
    with pytest.raises(InputError, match="SparseGPT's updates"):
        config_from_args(_lm_args("--method", "icbs", "--objective", "fisher",
                                  "--init", "sparsegpt"))
    assert default.targets == "pruned" and default.target_ridge == 1.0
    targeted, _ = config_from_args(_lm_args("--method", "alps", "--targets", "dense",
                                            "--target-ridge", "10"))
    assert targeted.targets == "dense" and targeted.target_ridge == 10.0
    with pytest.raises(InputError, match="layer-wise method"):
        config_from_args(_lm_args("--method", "magnitude", "--targets", "dense"))
    with pytest.raises(InputError, match="--target-ridge must be > 0"):
        config_from_args(_lm_args("--method", "alps", "--targets", "dense",
                                  "--target-ridge", "-1"))
    # checked before the model loads, and said as the flags that set them
    with pytest.raises(InputError, match="--lm-fisher-samples must be >= 1, got 0"):
        config_from_args(_lm_args("--method", "icbs", "--lm-fisher-samples", "0"))
    with pytest.raises(InputError, match="--eval-windows must be >= 1, got 0"):
        config_from_args(_lm_args("--eval-windows", "0"))


def test_cli_end_to_end_on_a_local_folder(tmp_path, capsys):
    """qcbo prune --task lm's entry point on a tiny saved Llama + word-level tokenizer."""
    pytest.importorskip("gensim", reason="the Wikipedia text needs gensim")
    pytest.importorskip("matplotlib")
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    from qcbo.commands._prune_lm import run

    words = ["[UNK]", "[BOS]", "the", "of", "and", "in", "a", "to", "is", "was", ",", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]",
                                                unk_token="[UNK]")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=512,
                                   tie_word_embeddings=True)
    folder = tmp_path / "tiny"
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    out = tmp_path / "out"
    argv = ["--model", str(folder), "--density", "0.5", "--method", "icbs", "--objective",
            "reconstruction", "--refit", "--backend", "exact", "--block-size", "6",
            "--steps-per-epoch", "2", "--eval-windows", "2", "--calibration-windows", "4"]
    args = _lm_args(*argv, "--out", str(out), "--export-blocks", str(tmp_path / "b.npz"))
    assert run(args) == 0
    captured = capsys.readouterr()
    assert "block 1/1 pruned" in captured.err  # progress, one line per block
    assert "layers.0.mlp.down_proj" in captured.err  # the sparsity table
    assert "perplexity dense" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["perplexity"] > 1 and report["perplexity_dense"] > 1
    assert report["peak_rss_bytes"] > 0 and len(report["layer_density"]) == 7
    assert (out / "model.safetensors").is_file() and (out / "density.png").is_file()
    from qcbo.io import read_blockset

    blocks = read_blockset(tmp_path / "b.npz")
    assert len(blocks) == report["blocks"]["solved"] > 0
    # a run that fails (here: an unknown backend) leaves neither folder nor block set
    failed = _lm_args(*argv, "--backend", "no-such-backend", "--out", str(tmp_path / "failed"),
                      "--export-blocks", str(tmp_path / "failed.npz"))
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        run(failed)
    assert not (tmp_path / "failed").exists() and not (tmp_path / "failed.npz").exists()


def test_fisher_loss_check_never_raises_the_checked_perplexity(tiny):
    """With every calibration window in the gradient (and so in the check), the final
    calibration perplexity is at most that of the Wanda start; without the check the
    steps are applied whatever they do."""
    model, state, calib, _ = tiny
    windows = calib[:, :16]

    def run(steps, check):
        model.load_state_dict(state)
        icbs = LMICBSConfig(backend="exact", objective="fisher", block_size=8,
                            steps_per_layer=steps, fisher_samples=8, fisher_window=16,
                            loss_check=check, blocks_per_pass=1)
        report = prune_lm(model, calib, LMPruneConfig(method="icbs", density=0.3, icbs=icbs))
        return perplexity(model, windows), report["fisher"]

    start, _ = run(0, True)
    checked, info = run(6, True)
    assert info["blocks_checked"] == 2
    assert checked <= start * (1 + 1e-6)
    _, unchecked = run(6, False)
    assert unchecked["blocks_checked"] == 0


def test_fisher_groups_refresh_per_group_of_linears(tiny):
    """With fisher_groups each decoder block's attention and MLP get their own gradient
    pass and check (2 blocks x 2 groups), the blended curvature included; the checked
    perplexity does not rise above the start's and the report says what was checked."""
    model, state, calib, _ = tiny
    windows = calib[:, :16]
    model.load_state_dict(state)
    icbs = LMICBSConfig(backend="exact", objective="fisher", block_size=8, steps_per_layer=0,
                        fisher_samples=8, fisher_window=16)
    prune_lm(model, calib, LMPruneConfig(method="icbs", density=0.3, icbs=icbs))
    start = perplexity(model, windows)
    model.load_state_dict(state)
    icbs = LMICBSConfig(backend="exact", objective="fisher", block_size=8, steps_per_layer=4,
                        fisher_samples=8, fisher_window=16, fisher_groups=True, blend=0.5)
    report = prune_lm(model, calib, LMPruneConfig(method="icbs", density=0.3, icbs=icbs))
    info = report["fisher"]
    assert info["check_unit"] == "group of Linears" and info["blend"] == 0.5
    assert info["passes"] == info["blocks_checked"] == 4
    assert 0 <= info["blocks_restored"] <= 4
    assert perplexity(model, windows) <= start * (1 + 1e-6)
    with pytest.raises(ValueError, match="fisher objective only"):
        LMICBSConfig(blend=0.5).validate()
    with pytest.raises(InputError, match="blend"):
        LMICBSConfig(objective="fisher", blend=-0.1).validate()


def test_fisher_loss_check_restores_a_block_that_hurts(tiny, monkeypatch):
    """When every change raises the held-out loss (a check that always rises), every
    decoder block's group is undone, halved answers included, leaving the start's masks
    and weights exactly."""
    import itertools

    import pruning.llm.perplexity as perplexity_module

    model, state, calib, _ = tiny
    rising = itertools.count()
    monkeypatch.setattr(perplexity_module, "perplexity", lambda *a, **k: float(next(rising)))
    icbs = LMICBSConfig(backend="exact", objective="fisher", block_size=8, steps_per_layer=2,
                        fisher_samples=4, fisher_window=16, blocks_per_pass=1)
    config = LMPruneConfig(method="icbs", density=0.5, icbs=icbs)
    model.load_state_dict(state)
    prune_lm(model, calib, LMPruneConfig(method="wanda", density=0.5))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    report = prune_lm(model, calib, config)
    assert report["fisher"]["blocks_restored"] == report["fisher"]["blocks_checked"] == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, start[key]), key
