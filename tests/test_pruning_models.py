"""Model specs: builtin names, MLP state dicts from a path, and their errors."""

import pytest
import torch

from pruning.models import evaluate, load_builtin, load_model, mlp
from qcbo.errors import InputError


def test_mlp_layout_and_evaluate():
    net = mlp((4, 6, 3))
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    loss, acc = evaluate(net, x, y, batch_size=3)
    assert 0.0 <= acc <= 1.0
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(net(x), y)), rel=1e-5)


def test_load_model_from_state_dict_paths(tmp_path):
    from safetensors.torch import save_file

    net = mlp((64, 8, 10))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "m.safetensors"))
    loaded = load_model(str(tmp_path / "m.safetensors"))
    assert loaded.data.name == "digits" and loaded.name == "m"
    assert torch.equal(loaded.model[2].weight, net[2].weight)
    torch.save(mlp((5, 3)).state_dict(), tmp_path / "odd.pt")
    with pytest.raises(InputError, match="input width 5"):
        load_model(str(tmp_path / "odd.pt"))
    torch.save({"conv.weight": torch.zeros(2, 2, 3, 3)}, tmp_path / "conv.pt")
    with pytest.raises(InputError, match="not the state dict of an MLP"):
        load_model(str(tmp_path / "conv.pt"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read model file"):
        load_model(str(tmp_path / "junk.safetensors"))
    with pytest.raises(InputError, match="no such model file"):
        load_model(str(tmp_path / "absent.pt"))
    with pytest.raises(InputError, match="unknown builtin model"):
        load_builtin("resnet-9000")


def test_zoo_architectures_build_and_load_a_saved_state(tmp_path):
    from safetensors.torch import save_file

    from pruning.data import load_digits
    from pruning.zoo import ZOO, build_model, load_zoo
    from qcbo.errors import InputError

    data = load_digits()
    spec = ZOO["digits-mlp-deep-sgd"]
    model = build_model(spec, data)
    assert model(data.x_test[:5]).shape == (5, 10)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = load_zoo(f"digits-mlp-deep-sgd@{tmp_path / 'm.safetensors'}")
    assert torch.equal(loaded.model(data.x_test[:5]), model(data.x_test[:5]))
    with pytest.raises(InputError, match="not a state dict of zoo:digits-mlp"):
        load_zoo(f"digits-mlp@{tmp_path / 'm.safetensors'}")
    with pytest.raises(InputError, match="unknown zoo model"):
        load_zoo("resnet")


class _Custom(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)


def test_full_module_files_load_safely(tmp_path):
    """torch.save(model) of torch.nn layers loads (no code runs); other classes are refused."""
    from torch import nn

    net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3), nn.ReLU(),
                        nn.Flatten(), nn.Dropout(0.1), nn.Linear(3 * 6 * 6, 10))
    torch.save(net, tmp_path / "cnn.pt")
    loaded = load_model(str(tmp_path / "cnn.pt"))
    assert loaded.data.name == "digits"
    assert not loaded.model.training
    x = torch.randn(4, 64)
    assert torch.equal(loaded.model(x), net.eval()(x))
    torch.save(_Custom(), tmp_path / "custom.pt")
    with pytest.raises(InputError, match="_Custom.*will not load"):
        load_model(str(tmp_path / "custom.pt"))
    torch.save(nn.Sequential(nn.ReLU()), tmp_path / "nothing.pt")
    with pytest.raises(InputError, match="no nn.Linear or nn.Conv2d"):
        load_model(str(tmp_path / "nothing.pt"))
    torch.save(nn.Sequential(nn.Linear(7, 10)), tmp_path / "wide.pt")
    with pytest.raises(InputError, match="neither 784"):
        load_model(str(tmp_path / "wide.pt"))


def test_zoo_replicates_have_their_own_split_and_seed():
    from dataclasses import asdict

    from pruning.data import load_dataset
    from pruning.zoo import ZOO, _spec_record, zoo_spec

    base = ZOO["digits-mlp"]
    assert zoo_spec("digits-mlp") is base and zoo_spec("digits-mlp.r0") is base
    r2 = zoo_spec("digits-mlp.r2")
    assert (r2.name, r2.split_seed, r2.seed) == ("digits-mlp.r2", 2, base.seed + 2000)
    assert {k: v for k, v in asdict(r2).items() if k not in ("name", "seed", "split_seed")} \
        == {k: v for k, v in asdict(base).items() if k not in ("name", "seed", "split_seed")}
    # Models cached before replicates existed recorded no split_seed: still a match.
    assert "split_seed" not in _spec_record(base) and _spec_record(r2)["split_seed"] == 2
    a, b = load_dataset("digits", 0), load_dataset("digits", 2)
    assert len(a.x_test) == len(b.x_test) == 300 and len(a.x_train) == len(b.x_train)
    rows = lambda x: {tuple(v.tolist()) for v in x}  # noqa: E731
    assert rows(a.x_test) != rows(b.x_test)
    assert rows(a.x_train) | rows(a.x_val) | rows(a.x_test) \
        == rows(b.x_train) | rows(b.x_val) | rows(b.x_test)
    for bad in ("digits-mlp.r", "digits-mlp.r01", "digits-mlp.rx", "resnet.r1"):
        with pytest.raises(InputError, match="unknown zoo model"):
            zoo_spec(bad)


def test_state_dicts_with_wrong_outputs_or_nan_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    for outputs in (7, 12):
        net = mlp((64, 8, outputs))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(tmp_path / f"o{outputs}.safetensors"))
        with pytest.raises(InputError, match=f"has {outputs} outputs; digits has 10 classes"):
            load_model(str(tmp_path / f"o{outputs}.safetensors"))
    state = mlp((64, 8, 10)).state_dict()
    state["0.weight"][0, 0] = float("nan")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(InputError, match="NaN or inf weights"):
        load_model(str(tmp_path / "nan.safetensors"))
