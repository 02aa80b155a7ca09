"""File formats and converters: round trips keep every state's energy; bad files fail cleanly."""

import json
import os
import zipfile

import numpy as np
import pytest

from qcbo import InputError, Problem
from qcbo import interop
from qcbo.io import (
    BlockSetWriter,
    read_blockset,
    read_native,
    read_orlib,
    read_problem,
    read_problems,
    read_ubqp,
    write_blockset,
    write_native,
    write_orlib,
    write_problem,
    write_ubqp,
)

from .helpers import all_states, random_problem

CASES = [(1, None), (4, 2), (6, None), (8, 3), (8, 0)]


def _same_energies(a: Problem, b: Problem, atol: float = 1e-12) -> None:
    X = all_states(a.n)
    assert np.allclose(a.energies(X), b.energies(X), atol=atol, rtol=0)


@pytest.mark.parametrize("n,k", CASES)
def test_native_round_trip(tmp_path, n, k):
    p = random_problem(n, k, seed=n, offset=0.5).replace(metadata={"layer": "fc1", "step": 3})
    path = tmp_path / "p.npz"
    write_native(path, p)
    q = read_native(path)
    assert q == p  # bit-exact, metadata included


def test_labels_survive_native(tmp_path):
    p = Problem(np.eye(3), labels=["a", "b", 7])
    write_native(tmp_path / "p.npz", p)
    assert read_native(tmp_path / "p.npz").labels == ("a", "b", 7)


@pytest.mark.parametrize("n,k", CASES)
def test_blockset_round_trip(tmp_path, n, k):
    problems = [random_problem(n, k, seed=s, offset=s).replace(metadata={"block": s}) for s in range(4)]
    path = tmp_path / "blocks.npz"
    write_blockset(path, problems, metadata={"model": "mlp"})
    with read_blockset(path) as blocks:
        assert len(blocks) == 4 and blocks.metadata == {"model": "mlp"}
        assert list(blocks) == problems
        assert blocks[-1] == problems[-1]
    assert read_problem(path, instance=2) == problems[1]


def test_blockset_writer_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "blocks.npz"
    with pytest.raises(RuntimeError):
        with BlockSetWriter(path) as writer:
            writer.add(random_problem(3, 1, seed=0))
            raise RuntimeError("solver crashed")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path):
    path = tmp_path / "p.npz"
    write_native(path, Problem(np.eye(2)))
    before = path.read_bytes()
    with pytest.raises(InputError):
        write_native(path, Problem(np.eye(2), labels=[1.5, 2.5]))  # labels not str/int
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.npz"]


@pytest.mark.parametrize("n,k", CASES)
def test_ubqp_round_trip(tmp_path, n, k):
    p = random_problem(n, k, seed=n)
    write_ubqp(tmp_path / "p.ubqp", p)
    q = read_ubqp(tmp_path / "p.ubqp", k=k)
    _same_energies(p, q, atol=0)
    assert q.k == k


def test_ubqp_convention_pairs_are_symmetric(tmp_path):
    path = tmp_path / "h.ubqp"
    path.write_text("3 3\n1 1 -1\n1 2 -0.5\n2 2 -2\n")
    p = read_ubqp(path)
    assert p.Q[0, 1] == p.Q[1, 0] == -0.5
    assert p.energy(np.array([1, 1, 0])) == -1 - 2 - 1.0


def test_orlib_reading_maximisation_negated(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("2\n3 2\n1 1 5\n2 3 4\n2 3\n1 1 3\n1 2 -2\n2 2 1\n")
    (tmp_path / "best_known.json").write_text(json.dumps({"tiny.2": -3}))
    first, second = read_orlib(path)
    # maximise x'Qx: 2*4*x2*x3 + 5*x1 -> max 13 at all ones -> min -13
    assert first.energy(np.array([1, 1, 1])) == -13
    assert second.metadata == {"name": "tiny.2", "source": str(path), "format": "orlib",
                               "instance": 2, "sense": "maximise, negated", "best_known": -3.0}
    assert read_problem(path, instance=2) == second
    write_orlib(tmp_path / "again.txt", [first, second])
    again = read_orlib(tmp_path / "again.txt")
    _same_energies(first, again[0], atol=0)
    _same_energies(second, again[1], atol=0)


def test_shared_orlib_files_read(tmp_path):
    from .conftest import ORLIB_DIR

    path = os.path.join(ORLIB_DIR, "bqp50.txt")
    if not os.path.exists(path):
        pytest.skip("../shared/data/orlib not present")
    problems = read_problems(path)
    assert len(problems) == 10 and all(p.n == 50 for p in problems)
    assert problems[0].metadata["best_known"] == -2098


def test_shipped_orlib_sample_reads_in_every_clone():
    """The OR-Library reader on the packaged sample (no ../shared data needed): one
    maximisation instance of n = 50, stored negated, equal to its generator's matrix."""
    from qcbo.data.make_samples import HERE, bqp_like

    problems = read_problems(HERE / "bqp50-like.txt")
    assert len(problems) == 1
    p = problems[0]
    assert p.n == 50 and p.k is None and p.metadata["sense"] == "maximise, negated"
    q = bqp_like()  # upper triangle; OR-Library pairs count twice (q_ij = q_ji)
    q = q + np.triu(q, 1).T
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.integers(0, 2, 50)
        assert p.energy(x) == -float(x @ q @ x)


@pytest.mark.parametrize("n,k", CASES)
def test_dimod_round_trips(tmp_path, n, k):
    p = random_problem(n, k, seed=n, offset=-1.5).replace(metadata={"layer": "x"})
    cqm_back = interop.from_cqm(interop.to_cqm(p))
    _same_energies(p, cqm_back)
    assert cqm_back.k == k
    if k is None:
        _same_energies(p, interop.from_bqm(interop.to_bqm(p)))
    else:
        with pytest.raises(InputError, match="cardinality"):
            interop.to_bqm(p)
    write_problem(tmp_path / "p.json", p)
    q = read_problem(tmp_path / "p.json")
    _same_energies(p, q)
    assert q.k == k and q.metadata == {"layer": "x"}


@pytest.mark.parametrize("labels", [[3, 1, 4, 0, 2], ["x1", "x0", "y", "b", "a"],
                                    [(1, 2), (0, 1), "z", 5, "q"]])
def test_dimod_json_keeps_the_variable_order(tmp_path, labels):
    """dimod writes the variables sorted; the file still reads back in the problem's order."""
    p = random_problem(5, 2, seed=3).replace(labels=labels)
    write_problem(tmp_path / "p.json", p)
    q = read_problem(tmp_path / "p.json")
    assert q.labels == tuple(labels)
    X = all_states(5)
    assert np.allclose(p.energies(X), q.energies(X))
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["qcbo"]["variables"] = doc["qcbo"]["variables"][:-1]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="exactly once"):
        read_problem(tmp_path / "bad.json")


def test_dimod_spin_models_are_converted():
    import dimod

    bqm = dimod.BinaryQuadraticModel({"a": 1.0, "b": -0.5}, {("a", "b"): 2.0}, 0.25, dimod.SPIN)
    p = interop.from_bqm(bqm)
    for x in all_states(2):
        spins = {"a": 2 * int(x[0]) - 1, "b": 2 * int(x[1]) - 1}
        assert p.energy(x) == pytest.approx(bqm.energy(spins))
    assert p.labels == ("a", "b")


@pytest.mark.parametrize("n,k", CASES)
def test_qiskit_round_trips(tmp_path, n, k):
    p = random_problem(n, k, seed=n, offset=2.0)
    q = interop.from_quadratic_program(interop.to_quadratic_program(p))
    _same_energies(p, q)
    assert q.k == k
    write_problem(tmp_path / "p.lp", p)
    lp = read_problem(tmp_path / "p.lp")
    _same_energies(p, lp, atol=1e-9)  # the LP writer prints 12 decimals
    assert lp.k == k


def test_qiskit_maximisation_is_negated():
    from qiskit_optimization import QuadraticProgram

    qp = QuadraticProgram()
    qp.binary_var("a")
    qp.binary_var("b")
    qp.maximize(linear={"a": 1.0}, quadratic={("a", "b"): 3.0}, constant=1.0)
    p = interop.from_quadratic_program(qp)
    assert p.energy(np.array([1, 1])) == -5.0 and p.labels == ("a", "b")


def test_all_formats_agree_through_a_chain(tmp_path):
    """native -> block set -> UBQP -> dimod -> qiskit -> native keeps every energy."""
    p = random_problem(7, None, seed=9)
    write_native(tmp_path / "a.npz", p)
    write_blockset(tmp_path / "b.npz", [read_native(tmp_path / "a.npz")])
    write_ubqp(tmp_path / "c.ubqp", read_problem(tmp_path / "b.npz"))
    bqm = interop.to_bqm(read_ubqp(tmp_path / "c.ubqp"))
    qp = interop.to_quadratic_program(interop.from_bqm(bqm))
    final = interop.from_quadratic_program(qp)
    _same_energies(p, final)


# --------------------------------------------------------------------------- malformed input
def _native_with_meta(path, meta, q=np.eye(2)):
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in (("meta", np.array(json.dumps(meta))), ("Q", q)):
            with zf.open(f"{name}.npy", "w") as handle:
                np.lib.format.write_array(handle, arr, allow_pickle=False)


@pytest.mark.parametrize(
    "meta,q,match",
    [
        ({"format": "qcbo.problem", "version": 99, "n": 2, "k": None, "offset": 0}, np.eye(2), "version 99"),
        ({"format": "other", "version": 1}, np.eye(2), "unknown format"),
        ({"format": "qcbo.problem", "version": 1, "n": 3, "k": None, "offset": 0}, np.eye(2), "shape"),
        ({"format": "qcbo.problem", "version": 1, "n": 2, "k": 5, "offset": 0}, np.eye(2), "out of range"),
        ({"format": "qcbo.problem", "version": 1, "n": 2, "k": None, "offset": 0},
         np.array([[np.inf, 0], [0, 1]]), "NaN or inf"),
        ({"format": "qcbo.problem", "version": 1, "n": 2, "k": None, "offset": 0},
         np.array([[0.0, 1.0], [-1.0, 0.0]]), "not symmetric"),
    ],
)
def test_malformed_native_files(tmp_path, meta, q, match):
    path = tmp_path / "bad.npz"
    _native_with_meta(path, meta, q)
    with pytest.raises(InputError, match=match) as info:
        read_problem(path)
    assert str(path) in str(info.value)


def test_truncated_and_corrupt_npz(tmp_path):
    good = tmp_path / "good.npz"
    write_native(good, random_problem(20, 5, seed=0))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip at all" * 10)
    for path in (truncated, corrupt):
        with pytest.raises(InputError) as info:
            read_problem(path)
        assert str(path) in str(info.value)


def test_truncated_blockset(tmp_path):
    path = tmp_path / "blocks.npz"
    write_blockset(path, [random_problem(30, 10, seed=s) for s in range(3)])
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) - 200])
    with pytest.raises(InputError):
        read_problems(cut)


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("3 2\n1 1 1.0\n", "truncated"),
        ("2 1\n1 3 1.0\n", "out of range"),
        ("2 1\n1 x 1.0\n", "not a number"),
        ("2 1\n1 1 nan\n", "not finite"),
        ("2 1\n1 1\n", "expected 3 fields"),
    ],
)
def test_malformed_ubqp(tmp_path, text, match):
    path = tmp_path / "bad.ubqp"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_problem(path)


def test_orlib_bad_instance_and_truncation(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("2\n2 1\n1 2 1\n2 1\n1 1 4\n")
    with pytest.raises(InputError, match="instance 3 out of range"):
        read_problem(path, instance=3)
    with pytest.raises(InputError, match="holds 2 problems"):
        read_problem(path)
    path.write_text("3\n2 1\n1 2 1\n")
    with pytest.raises(InputError, match="truncated"):
        read_problems(path)


def test_k_for_formats_without_one(tmp_path):
    path = tmp_path / "p.ubqp"
    write_ubqp(path, random_problem(4, None, seed=0))
    assert read_problem(path, k=2).k == 2
    with pytest.raises(InputError, match="out of range"):
        read_problem(path, k=9)
    native = tmp_path / "p.npz"
    write_native(native, random_problem(4, 1, seed=0))
    with pytest.raises(InputError, match="conflicts"):
        read_problem(native, k=2)


def test_unknown_extension(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("1,2")
    with pytest.raises(InputError, match="unknown file type"):
        read_problem(path)
    with pytest.raises(InputError, match="no such file"):
        read_problem(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- .lp details
def _lp_problem(n: int, k: int, seed: int, density: float = 1.0) -> Problem:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) * (rng.random((n, n)) < density)
    return Problem((a + a.T) / 2, 1.25, k, labels=[f"w_{i}" for i in range(n)],
                   metadata={"layer": "fc1", "rows": [0, n]})


@pytest.mark.parametrize("n,density", [(50, 1.0), (250, 1.0), (1000, 0.01)])
def test_lp_round_trip_with_k_and_labels(tmp_path, n, density):
    """docplex wraps Σx == k over many lines once n >= 13; it must read back whole."""
    pytest.importorskip("docplex")
    p = _lp_problem(n, n // 3, seed=n, density=density)
    write_problem(tmp_path / "p.lp", p)
    text = (tmp_path / "p.lp").read_text(encoding="latin-1")
    assert text.count("cardinality:") == 1 and text.split("cardinality:")[1].count("\n") > 2
    back = read_problem(tmp_path / "p.lp")
    assert back.n == n and back.k == n // 3 and back.labels == p.labels
    assert back.metadata == p.metadata
    X = np.random.default_rng(0).integers(0, 2, size=(64, n))
    scale = np.abs(p.energies(X)).max()
    assert np.allclose(back.energies(X), p.energies(X), atol=1e-9 * n * n, rtol=1e-10), scale


def test_lp_keeps_labels_that_are_not_lp_names(tmp_path):
    pytest.importorskip("docplex")
    p = random_problem(4, 2, seed=1).replace(labels=[7, "a b", 3, "c"])
    write_problem(tmp_path / "p.lp", p)
    back = read_problem(tmp_path / "p.lp")
    assert back.labels == (7, "a b", 3, "c")
    _same_energies(p, back, atol=1e-9)
    keywords = p.replace(labels=["End", "st", "x", "Bounds"])  # LP section words
    write_problem(tmp_path / "k.lp", keywords)
    assert read_problem(tmp_path / "k.lp").labels == ("End", "st", "x", "Bounds")


def test_quadratic_program_keeps_labels():
    pytest.importorskip("qiskit_optimization")
    p = random_problem(3, 1, seed=2).replace(labels=["a", "b", "c"])
    qp = interop.to_quadratic_program(p)
    assert [v.name for v in qp.variables] == ["a", "b", "c"]
    assert interop.from_quadratic_program(qp).labels == ("a", "b", "c")


_LP = """\\ hand written
Minimize
 obj: 1 x + 2 y - 3 z + [ 4 x*y + 2 y*z - 6 x^2 ]/2 + 0.5
Subject To
 card: x + y
   + z = 2
Bounds
{bounds}
Binaries
 x y z
End
"""


def test_lp_fixed_variable_is_folded(tmp_path):
    """A bound x = 1 fixes x: the optimum over the rest matches enumeration with x = 1."""
    free = tmp_path / "free.lp"
    free.write_text(_LP.format(bounds=" 0 <= x <= 1"))
    full = read_problem(free)
    assert full.k == 2 and full.labels == ("x", "y", "z")
    fixed_path = tmp_path / "fixed.lp"
    fixed_path.write_text(_LP.format(bounds=" x = 1\n y <= 5"))
    fixed = read_problem(fixed_path)
    assert fixed.labels == ("y", "z") and fixed.k == 1
    assert fixed.metadata["fixed"] == {"x": 1}
    for y in (0, 1):
        for z in (0, 1):
            assert fixed.energy(np.array([y, z])) == pytest.approx(
                full.energy(np.array([1, y, z])))
    loose = tmp_path / "loose.lp"  # bounds that allow both 0 and 1 leave x binary
    loose.write_text(_LP.format(bounds=" x free\n y >= -1\n -inf <= z <= 3"))
    assert read_problem(loose).n == 3 and "fixed" not in read_problem(loose).metadata
    lower = tmp_path / "lower.lp"
    lower.write_text(_LP.format(bounds=" z >= 1"))
    assert read_problem(lower).metadata["fixed"] == {"z": 1}


@pytest.mark.parametrize("bounds,match", [
    (" x >= 2", "leave no 0/1 value"),
    (" 0.2 <= x <= 0.8", "leave no 0/1 value"),
    (" q <= 1", "not declared binary"),
    (" x <= y", "cannot parse bound"),
])
def test_lp_bounds_that_cannot_hold_are_refused(tmp_path, bounds, match):
    path = tmp_path / "b.lp"
    path.write_text(_LP.format(bounds=bounds))
    with pytest.raises(InputError, match=match):
        read_problem(path)


def test_ubqp_duplicate_pairs_are_refused(tmp_path):
    path = tmp_path / "d.ubqp"
    path.write_text("2 2\n1 2 1.0\n2 1 2.0\n")
    with pytest.raises(InputError, match=r"d.ubqp:3: pair \(1, 2\) already given on line 2"):
        read_ubqp(path)


def test_huge_declared_sizes_are_refused_before_allocating(tmp_path):
    path = tmp_path / "h.ubqp"
    path.write_text("1000000 1\n1 1 1\n")
    with pytest.raises(InputError, match="n=1000000 needs .* GiB"):
        read_ubqp(path)


def test_samples_are_shipped_and_readable():
    from qcbo.io import SAMPLES, sample_path

    for name in SAMPLES:
        assert sample_path(name).exists(), name
        assert read_problems(f"sample:{name}", k=None)
    assert read_problem("sample:block", k=12).n == 24
    assert len(read_problems("sample:blocks")) == 8


@pytest.mark.parametrize("name", ["native", "blockset", "ubqp", "orlib", "dimod", "lp"])
def test_format_table_keeps_what_it_says(tmp_path, name):
    """Every writable format round-trips Q and exactly the fields its table entry keeps."""
    pytest.importorskip("dimod") if name == "dimod" else None
    if name == "lp":
        pytest.importorskip("qiskit_optimization")
    from qcbo.io import FORMATS, read_problem

    fmt = FORMATS[name]
    rng = np.random.default_rng(3)
    a = rng.integers(-5, 6, size=(6, 6)).astype(float)
    p = Problem(a + a.T, offset=1.5, k=2, labels=[f"v{i}" for i in range(6)],
                metadata={"layer": "fc1"})
    path = tmp_path / f"p{fmt.suffixes[0]}"
    fmt.write(path, p)
    from qcbo.io import detect_format

    assert detect_format(path) in (name, "ubqp" if name == "orlib" else name)
    back = read_problem(path)
    np.testing.assert_allclose(back.Q, p.Q)
    assert ("offset" in fmt.keeps) == (back.offset == p.offset)
    assert ("k" in fmt.keeps) == (back.k == p.k)
    assert ("labels" in fmt.keeps) == (back.labels == p.labels)
    if "metadata" in fmt.keeps:
        assert back.metadata.get("layer") == "fc1"
    assert fmt.lossy == bool({"offset", "k", "labels", "metadata"} - fmt.keeps)


def test_unknown_suffix_lists_the_table(tmp_path):
    from qcbo.io import output_format

    with pytest.raises(InputError, match=r"\.lp.*\.ubqp|\.npz"):
        output_format(tmp_path / "x.xyz")
