"""`qcbo prune` end to end on the built-in digits MLP, and its one-line errors."""

import importlib
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from backends import available_backends, get_backend
from qcbo.cli import main
from qcbo.io import read_blockset


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    # A private model cache: the digits MLP is trained once for this module (~10 s).
    mp = pytest.MonkeyPatch()
    mp.setenv("QCBO_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    mp.undo()


def test_prune_digits_writes_model_report_plot_and_blocks(tmp_path, capsys):
    out, blocks = tmp_path / "run", tmp_path / "blocks" / "b.npz"
    code = main(["prune", "--epochs", "2", "--steps-per-epoch", "4", "--block-size", "64",
                 "--out", str(out), "--export-blocks", str(blocks), "--seed", "1",
                 "--no-reconstruct"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epoch 2/2: val loss" in captured.err
    assert "test accuracy" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "mlp-digits" and report["method"] == "icbs"
    assert report["config"]["reconstruct"] is False
    assert report["blocks_solved"] == 8 and len(report["epochs"]) == 2
    assert set(report["baselines"]) == {"magnitude", "magnitude-row", "magnitude-global",
                                        "wanda", "gradient"}
    assert report["initial"]["method"] in report["initial"]["candidates"]
    for key in ("val_loss", "val_accuracy", "test_accuracy"):
        assert report["dense"][key] is not None and report["final"][key] is not None
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    from safetensors.torch import load_file

    state = load_file(str(out / "pruned.safetensors"))
    total = kept_all = 0
    for name, layer in report["layers"].items():
        kept = int((state[name] != 0).sum())
        assert layer["density"] == pytest.approx(kept / state[name].numel())
        total, kept_all = total + state[name].numel(), kept_all + kept
    # Per layer (magnitude, Wanda, ...) or over all layers (magnitude-global): the
    # start's rounding, within one weight per layer.
    assert abs(kept_all - 0.2 * total) <= len(report["layers"])
    problems = read_blockset(blocks)
    assert len(problems) == 8 == report["exported_blocks"]["count"]
    first = problems[0]
    meta = first.metadata
    assert first.n == 64 and first.k == sum(meta["initial"])
    assert {"layer", "indices", "step", "scale", "energy_reached", "answer", "applied"} <= set(meta)
    assert meta["energy_reached"] <= first.energy(np.array(meta["initial"])) + 1e-9
    # The pruned model loads back as a model path and prunes further, one-shot.
    code = main(["prune", "--model", str(out / "pruned.safetensors"), "--method", "magnitude",
                 "--density", "0.1", "--out", str(tmp_path / "again")])
    assert code == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["method"] == "magnitude" and again["density"] == pytest.approx(0.1, abs=1e-3)


def _assert_one_line_error(capsys, code, text):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert text in err and len(err.splitlines()) == 1, err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prune", "--model", str(tmp_path / "missing.safetensors"), "--out", str(out)])
    _assert_one_line_error(capsys, code, "no such model file")
    code = main(["prune", "--backend", "no-such-backend", "--out", str(out)])
    _assert_one_line_error(capsys, code, "unknown backend")
    code = main(["prune", "--method", "sparsegpt", "--out", str(out)])
    _assert_one_line_error(capsys, code, "--task lm")
    code = main(["prune", "--init", "sparsegpt", "--out", str(out)])
    _assert_one_line_error(capsys, code, "--init sparsegpt is for --task lm only")
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--density", "0", "--out", str(out)])
    assert exc.value.code == 2 and "density must be in (0, 1]" in capsys.readouterr().err


def test_quantum_block_limit_is_one_line(tmp_path, capsys):
    small = [b for b in available_backends() if get_backend(b).max_variables is not None]
    if not small:
        pytest.skip("no backend with a variable limit installed")
    backend = get_backend(small[0])
    code = main(["prune", "--backend", backend.name, "--block-size",
                 str(backend.max_variables + 1), "--out", str(tmp_path / "q")])
    _assert_one_line_error(capsys, code, f"at most {backend.max_variables} variables per block")
    assert not (tmp_path / "q").exists()


def test_task_lm_without_llm_module_is_one_line(tmp_path, capsys, monkeypatch):
    # Simulate an installation without pruning.llm, or without the llm extra.
    monkeypatch.setitem(sys.modules, "pruning.llm.run", None)
    code = main(["prune", "--task", "lm", "--out", str(tmp_path / "lm")])
    _assert_one_line_error(capsys, code, "pruning.llm")
    monkeypatch.setattr(importlib, "import_module", _missing("transformers"))
    code = main(["prune", "--task", "lm", "--out", str(tmp_path / "lm")])
    _assert_one_line_error(capsys, code, "pip install -e '.[llm]'")
    assert not (tmp_path / "lm").exists()


def _missing(name):
    """importlib.import_module, except that pruning.llm.run fails on a missing ``name``."""
    real = importlib.import_module

    def import_module(module, *args, **kwargs):
        if module == "pruning.llm.run":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(module, *args, **kwargs)
    return import_module


def test_task_lm_delegates_to_the_lm_command(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    from qcbo.commands import _prune_lm as prune_lm

    seen = {}

    def fake_run(args):
        seen["args"] = args
        return 0

    monkeypatch.setattr(prune_lm, "run", fake_run)
    code = main(["prune", "--task", "lm", "--model", "some-lm", "--density", "0.3",
                 "--method", "sparsegpt", "--objective", "reconstruction", "--refit",
                 "--pattern", "2:4", "--backend", "tabu", "--block-size", "128",
                 "--out", str(tmp_path / "lm"), "--export-blocks", str(tmp_path / "b.npz")])
    assert code == 0
    args = seen["args"]
    assert (args.model, args.density, args.method, args.objective) == (
        "some-lm", 0.3, "sparsegpt", "reconstruction")
    assert args.refit and args.pattern == "2:4" and args.backend == "tabu"
    assert args.block_size == 128 and args.export_blocks == str(tmp_path / "b.npz")
    for name in ("epochs", "steps_per_epoch", "seed", "out"):
        assert hasattr(args, name)


def test_prune_refuses_bad_input_before_any_work(tmp_path, capsys):
    for argv, text in [(["--out", "/proc/qcbo-out"], "cannot write in /proc"),
                       (["--seed", "-3"], "--seed must be >= 0"),
                       (["--group-size", "0"], "--group-size"),
                       (["--pattern", "2:4"], "--task lm only"),
                       (["--row-rounds", "1"], "--task lm only"),
                       (["--blend", "0.5"], "--task lm --objective fisher only"),
                       (["--model", "zoo:nope"], "unknown zoo model"),
                       (["--refit", "--refit-rounds", "0"], "--refit-rounds must be >= 1"),
                       (["--refit", "--no-loss-check"], "needs the loss check: drop --no-loss-check"),
                       (["--select-z", "-1"], "--select-z must be finite and >= 0"),
                       (["--loss-z", "inf"], "--loss-z must be finite and >= 0"),
                       (["--workers", "2"], "--workers 2 needs --executor processes or ray"),
                       (["--executor", "processes", "--workers", "0"], "--workers must be >= 1"),
                       (["--task", "lm", "--model", "zoo:digits-mlp"],
                        "zoo models are classifiers"),
                       (["--task", "lm", "--select-z", "1"], "--select-z are for classifiers"),
                       (["--task", "lm", "--refit-rounds", "2"], "--refit-rounds is for classifiers"),
                       (["--task", "lm", "--no-keep-best"], "--keep-best and --select-z are for classifiers"),
                       (["--task", "lm", "--reconstruct"], "--reconstruct is for classifiers")]:
        code = main(["prune", *argv, "--epochs", "0"] + ([] if "--out" in argv else
                                                         ["--out", str(tmp_path / "o")]))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and text in err[0], (argv, err)
        assert not (tmp_path / "o").exists()


def test_outputs_never_replace_what_a_run_did_not_write(tmp_path, capsys):
    """--out: a folder of other files, or the one holding --model, is refused before any
    work; an earlier run's folder is replaced whole. --export-blocks replaces only an
    earlier block set."""
    foreign = tmp_path / "work"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    code = main(["prune", "--epochs", "0", "--out", str(foreign)])
    _assert_one_line_error(capsys, code, "holds files of something else (thesis.tex)")
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    run = tmp_path / "run"
    assert main(["prune", "--epochs", "0", "--out", str(run)]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["pruned.safetensors", "report.json",
                                                      "report.png"]
    capsys.readouterr()
    model = run / "pruned.safetensors"
    before = model.read_bytes()
    code = main(["prune", "--model", str(model), "--epochs", "0", "--out", str(run)])
    _assert_one_line_error(capsys, code, "holds the input")
    assert model.read_bytes() == before
    (tmp_path / "notes.txt").write_text("keep me")
    code = main(["prune", "--epochs", "0", "--out", str(tmp_path / "o"),
                 "--export-blocks", str(tmp_path / "notes.txt")])
    _assert_one_line_error(capsys, code, "exists and is not a block set")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    code = main(["prune", "--epochs", "0", "--out", str(tmp_path / "o"),
                 "--export-blocks", str(tmp_path / "notes.txt" / "b.npz")])
    _assert_one_line_error(capsys, code, "cannot write in")
    assert not (tmp_path / "o").exists()


def test_backend_options_and_block_size_are_checked_before_the_model_loads(
        tmp_path, capsys, monkeypatch):
    import pruning.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pruning.models, "load_model", no_load)
    for argv, text in [(["--backend", "exact", "--block-size", "64"], "does not fit --backend exact"),
                       (["-o", "nosuchopt=3"], "unknown option(s) 'nosuchopt'"),
                       (["-o", "sweeps=0"], "option sweeps must be")]:
        code = main(["prune", *argv, "--out", str(tmp_path / "o")])
        _assert_one_line_error(capsys, code, text)
    assert not (tmp_path / "o").exists()


def test_option_overrides_one_key_of_the_backend_preset(tmp_path, capsys):
    from backends import get_backend

    preset = dict(get_backend("sa").icbs_options)
    assert "restarts" in preset and len(preset) > 1
    code = main(["prune", "--epochs", "0", "-o", "restarts=3", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["backend_options"] == {**preset, "restarts": 3}


def test_one_shot_method_reports_every_baseline_from_the_dense_model(tmp_path, capsys):
    reports = {}
    for method in ("icbs", "magnitude"):
        out = tmp_path / method
        epochs = ["--epochs", "0"] if method == "icbs" else []
        assert main(["prune", "--method", method, *epochs, "--out", str(out)]) == 0
        reports[method] = json.loads((out / "report.json").read_text())["baselines"]
    capsys.readouterr()
    for name, metrics in reports["icbs"].items():
        assert reports["magnitude"][name]["test_accuracy"] == metrics["test_accuracy"], name
    for argv, text in [(["--method", "magnitude", "--init", "chita"], "--init: for --method icbs"),
                       (["--objective", "reconstruction"], "--objective: for --task lm only"),
                       (["--task", "lm", "--hessian", "exact"], "--hessian: for classifiers")]:
        code = main(["prune", *argv, "--out", str(tmp_path / "o")])
        _assert_one_line_error(capsys, code, text)


def test_out_edge_cases_current_folder_symlink_export_inside_and_other_reports(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["prune", "--epochs", "0", "--out", "."])
    _assert_one_line_error(capsys, code, "is the current folder")
    target, link = tmp_path / "target", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    assert main(["prune", "--epochs", "0", "--out", "link"]) == 0
    assert link.is_symlink() and (target / "pruned.safetensors").is_file()
    capsys.readouterr()
    code = main(["prune", "--epochs", "0", "--out", "o2", "--export-blocks", "o2/b.npz"])
    _assert_one_line_error(capsys, code, "inside --out o2")
    other = tmp_path / "cmp"  # another command's report.json does not make it a run folder
    other.mkdir()
    (other / "report.json").write_text("{}")
    (other / "gap_vs_time.png").write_bytes(b"")
    code = main(["prune", "--epochs", "0", "--out", "cmp"])
    _assert_one_line_error(capsys, code, "holds files of something else")
    assert sorted(p.name for p in other.iterdir()) == ["gap_vs_time.png", "report.json"]


def test_chita_method_reports_its_objective_and_overlap(tmp_path, capsys):
    out = tmp_path / "chita"
    assert main(["prune", "--method", "chita", "--density", "0.3", "--out", str(out)]) == 0
    final = json.loads((out / "report.json").read_text())["final"]
    assert final["stages"] == 1 and final["iterations"] >= 1 and final["objective"] > 0
    assert 0.0 < final["magnitude_overlap"] <= 1.0
    line = capsys.readouterr().out
    assert f"{100 * final['magnitude_overlap']:.1f} % of the kept weights are in " \
           "magnitude-global's mask" in line
