"""Malformed files of every format through the CLI: exit 2, one stderr line, no
traceback, no file left behind.

Cases run in-process through `qcbo.cli.main` (fast); a few run as subprocesses where
the process matters (memory of lying headers, a closed pipe, SIGTERM during convert).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qcbo import Problem
from qcbo.cli import main
from qcbo.io import write_blockset, write_native, write_problem

from .helpers import random_problem

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- builders
def _npy(shape, dtype="<f8", payload: bytes | None = None) -> bytes:
    """An .npy file whose header says ``shape``/``dtype``; payload defaults to zeros."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    if payload is None:
        payload = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return buf.getvalue() + payload


def _meta(obj) -> bytes:
    return _npy((), f"<U{len(json.dumps(obj))}", json.dumps(obj).encode("utf-32-le"))


def _zip(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return path


def _native_meta(n=2, **changes):
    meta = {"format": "qcbo.problem", "version": 1, "n": n, "k": None, "offset": 0.0,
            "labels": None, "metadata": {}}
    meta.update(changes)
    return meta


def _native(path, meta, q: bytes | None = None):
    n = meta.get("n", 2) if isinstance(meta, dict) else 2
    if q is None:
        q = _npy((n, n)) if isinstance(n, int) and 0 < n < 100 else _npy((2, 2))
    return _zip(path, {"meta": _meta(meta), "Q": q})


def _blockset_meta(heads, **changes):
    meta = {"format": "qcbo.blockset", "version": 1, "count": len(heads), "metadata": {},
            "problems": heads}
    meta.update(changes)
    return meta


def _head(n=3, i=0, **changes):
    head = {"n": n, "k": None, "offset": 0.0, "labels": None, "metadata": {},
            "array": f"q{i:08d}"}
    head.update(changes)
    return head


def _packed(n):
    return _npy((n * (n + 1) // 2,))


def _blockset(path, meta, members=None):
    if members is None:
        members = {"q00000000": _packed(3)}
    return _zip(path, {"meta": _meta(meta), **members})


def _text(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


LP_HEAD = "Minimize\n obj: x0 + x1 + [ 2 x0*x1 ]/2\n"
LP_BIN = "Binaries\n x0 x1\nEnd\n"


def _cases(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (file, extra CLI arguments)."""
    good = tmp / "good.npz"
    write_native(good, random_problem(4, 2, seed=0))
    raw = good.read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    gset = tmp / "goodset.npz"
    write_blockset(gset, [random_problem(3, 1, seed=s) for s in range(2)])
    set_raw = gset.read_bytes()
    set_flipped = bytearray(set_raw)
    set_flipped[200] ^= 0xFF

    c: dict[str, tuple[Path, list[str]]] = {}

    def add(name, path, *args):
        c[name] = (path, list(args))

    # UBQP text
    add("ubqp-empty", _text(tmp / "empty.ubqp", ""))
    add("ubqp-one-field", _text(tmp / "one.ubqp", "3\n"))
    add("ubqp-truncated", _text(tmp / "trunc.ubqp", "3 2\n1 1 1.0\n"))
    add("ubqp-nan", _text(tmp / "nan.ubqp", "2 1\n1 2 nan\n"))
    add("ubqp-inf", _text(tmp / "inf.ubqp", "2 1\n1 2 -inf\n"))
    add("ubqp-huge-n", _text(tmp / "huge.ubqp", "1000000 2\n1 1 1\n2 2 1\n"))
    add("ubqp-too-many-entries", _text(tmp / "many.ubqp", "2 10\n" + "1 1 1\n" * 10))
    add("ubqp-duplicate-pair", _text(tmp / "dup.ubqp", "2 2\n1 2 1\n2 1 3\n"))
    add("ubqp-index-range", _text(tmp / "range.ubqp", "2 1\n1 3 1\n"))
    add("ubqp-not-numbers", _text(tmp / "words.ubqp", "a b\n"))
    add("ubqp-binary", _text(tmp / "bin.ubqp", bytes(range(256)) * 4))
    add("ubqp-negative-n", _text(tmp / "neg.ubqp", "-3 0\n"))
    add("ubqp-bad-k", _text(tmp / "k.ubqp", "2 1\n1 1 1\n"), "--k", "5")
    # OR-Library text
    add("orlib-zero-count", _text(tmp / "zero.txt", "0\n"))
    add("orlib-huge-n", _text(tmp / "huge.txt", "1\n2000000 1\n1 1 5\n"))
    add("orlib-truncated", _text(tmp / "trunc.txt", "2\n2 1\n1 1 5\n"))
    add("orlib-trailing", _text(tmp / "trail.txt", "1\n2 1\n1 1 5\n1 2 3\n"))
    add("orlib-duplicate", _text(tmp / "dup.txt", "1\n2 2\n1 2 1\n1 2 1\n"))
    add("orlib-instance", _text(tmp / "inst.txt", "1\n2 1\n1 1 5\n"), "--instance", "4")
    add("orlib-nan", _text(tmp / "nan.txt", "1\n2 1\n1 1 NaN\n"))
    # native .npz
    add("npz-not-zip", _text(tmp / "noise.npz", os.urandom(300)))
    add("npz-truncated", _text(tmp / "half.npz", raw[: len(raw) // 2]))
    add("npz-bit-flip", _text(tmp / "flip.npz", bytes(flipped)))
    add("npz-no-meta", _zip(tmp / "nometa.npz", {"Q": _npy((2, 2))}))
    add("npz-meta-not-json", _zip(tmp / "notjson.npz", {"meta": _npy((), "<U3", "{{{".encode("utf-32-le"))}))
    add("npz-meta-array", _zip(tmp / "metalist.npz", {"meta": _meta([1, 2]), "Q": _npy((2, 2))}))
    add("npz-version", _native(tmp / "ver.npz", _native_meta(version=99)))
    add("npz-shape-lie", _native(tmp / "shape.npz", _native_meta(n=3), _npy((2, 2))))
    add("npz-npy-huge-shape", _native(tmp / "npyhuge.npz", _native_meta(n=2),
                                      _npy((200000, 200000), payload=bytes(32))))
    add("npz-header-huge-n", _native(tmp / "metahuge.npz", _native_meta(n=300000),
                                     _npy((2, 2))))
    add("npz-short-data", _native(tmp / "short.npz", _native_meta(n=4),
                                  _npy((4, 4), payload=bytes(40))))
    add("npz-compressed-lie", _zip(tmp / "bomb.npz", {
        "meta": _meta(_native_meta(n=3)), "Q": _npy((4000, 4000))}, compress=True))
    add("npz-dtype-str", _native(tmp / "str.npz", _native_meta(n=2),
                                 _npy((2, 2), "<U1", "abcd".encode("utf-32-le"))))
    add("npz-dtype-object", _native(tmp / "obj.npz", _native_meta(n=2), _npy((2, 2), "|O", b"")))
    add("npz-nan", _native(tmp / "qnan.npz", _native_meta(n=2),
                           _npy((2, 2), payload=np.array([[np.nan, 0], [0, 1]]).tobytes())))
    add("npz-asymmetric", _native(tmp / "asym.npz", _native_meta(n=2),
                                  _npy((2, 2), payload=np.array([[0., 1], [5, 0]]).tobytes())))
    add("npz-metadata-list", _native(tmp / "mdlist.npz", _native_meta(metadata=[1, 2])))
    add("npz-metadata-string", _native(tmp / "mdstr.npz", _native_meta(metadata="abc")))
    add("npz-labels-int", _native(tmp / "lab.npz", _native_meta(labels=5)))
    add("npz-labels-short", _native(tmp / "labs.npz", _native_meta(labels=["a"])))
    add("npz-labels-unhashable", _native(tmp / "labh.npz", _native_meta(labels=[[1], [2]])))
    add("npz-k-range", _native(tmp / "krange.npz", _native_meta(k=7)))
    add("npz-k-float", _native(tmp / "kfloat.npz", _native_meta(k=1.5)))
    add("npz-offset-str", _native(tmp / "offs.npz", _native_meta(offset="x")))
    add("npz-offset-nan", _native(tmp / "offnan.npz", _native_meta(offset=float("nan"))))
    add("npz-n-string", _native(tmp / "nstr.npz", _native_meta(n="2")))
    add("npz-bad-k-arg", good, "--k", "9")
    # block sets
    add("set-count", _blockset(tmp / "count.npz", _blockset_meta([_head()], count=5)))
    add("set-problems-dict", _blockset(tmp / "pdict.npz", _blockset_meta({"a": 1}, count=1)))
    add("set-member-missing", _blockset(tmp / "miss.npz", _blockset_meta([_head(), _head(i=1)])))
    add("set-member-size", _blockset(tmp / "size.npz", _blockset_meta([_head(n=4)])))
    add("set-member-huge", _blockset(tmp / "mhuge.npz", _blockset_meta([_head(n=500000)])))
    add("set-n-zero", _blockset(tmp / "nzero.npz", _blockset_meta([_head(n=0)])))
    add("set-array-name", _blockset(tmp / "aname.npz", _blockset_meta([_head(array=7)])))
    add("set-head-list", _blockset(tmp / "hlist.npz", _blockset_meta([[1, 2]])))
    add("set-block-metadata", _blockset(tmp / "bmeta.npz",
                                        _blockset_meta([_head(metadata=[1])])))
    add("set-metadata", _blockset(tmp / "smeta.npz", _blockset_meta([_head()], metadata=3)))
    add("set-bit-flip", _text(tmp / "sflip.npz", bytes(set_flipped)))
    add("set-truncated", _text(tmp / "strunc.npz", set_raw[: len(set_raw) - 100]))
    add("set-bad-instance", gset, "--instance", "3")
    # dimod .json
    add("json-not-json", _text(tmp / "bad.json", "{"))
    add("json-list", _text(tmp / "list.json", "[1, 2]"))
    add("json-not-bqm", _text(tmp / "other.json", '{"type": "Thing"}'))
    add("json-qcbo-entry", _text(tmp / "entry.json", json.dumps({
        "type": "BinaryQuadraticModel", "qcbo": [1]})))
    bqm = {"type": "BinaryQuadraticModel", "version": {"bqm_schema": "3.0.0"},
           "use_bytes": False, "index_type": "int32", "bias_type": "float64",
           "num_variables": 3, "num_interactions": 1, "variable_labels": [0, 1, 2],
           "variable_type": "BINARY", "offset": 0.0, "info": {},
           "linear_biases": [1.0, -1.0, 0.5], "quadratic_biases": [2.0],
           "quadratic_head": [0], "quadratic_tail": [1]}
    # dimod itself pads a short bias list with zeros and ignores num_variables
    add("json-short-linear", _text(tmp / "shortlin.json", json.dumps(
        {**bqm, "linear_biases": [1.0]})))
    add("json-num-variables", _text(tmp / "numvar.json", json.dumps({**bqm, "num_variables": 2})))
    add("json-short-head", _text(tmp / "shorthead.json", json.dumps(
        {**bqm, "num_interactions": 2, "quadratic_biases": [2.0, 1.0]})))
    # .lp
    add("lp-two-constraints", _text(tmp / "two.lp", LP_HEAD + "Subject To\n c1: x0 + x1 = 1\n"
                                    " c2: x0 + x1 = 1\n" + LP_BIN))
    add("lp-inequality", _text(tmp / "ineq.lp", LP_HEAD + "Subject To\n c1: x0 + x1 <= 1\n"
                               + LP_BIN))
    add("lp-general", _text(tmp / "gen.lp", LP_HEAD + "General\n x0\n" + LP_BIN))
    add("lp-bounds-empty", _text(tmp / "bnd.lp", LP_HEAD + "Bounds\n 0.2 <= x0 <= 0.8\n"
                                 + LP_BIN))
    add("lp-bound-undeclared", _text(tmp / "bund.lp", LP_HEAD + "Bounds\n y <= 1\n" + LP_BIN))
    add("lp-bound-garbage", _text(tmp / "bgar.lp", LP_HEAD + "Bounds\n x0 <= <= 1\n" + LP_BIN))
    add("lp-all-fixed", _text(tmp / "fixed.lp", LP_HEAD + "Bounds\n x0 = 1\n x1 = 0\n" + LP_BIN))
    add("lp-garbage", _text(tmp / "garb.lp", "Minimize\n obj: x0 ** ?? 3\n" + LP_BIN))
    add("lp-no-objective", _text(tmp / "noobj.lp", "hello\n"))
    add("lp-undeclared", _text(tmp / "undecl.lp", LP_HEAD + "Binaries\n x0\nEnd\n"))
    add("lp-comment", _text(tmp / "comm.lp", "\\ qcbo: {bad\n" + LP_HEAD + LP_BIN))
    add("lp-comment-labels", _text(tmp / "commlab.lp", '\\ qcbo: {"labels": [1]}\n'
                                   + LP_HEAD + LP_BIN))
    add("lp-k-infeasible", _text(tmp / "kinf.lp", LP_HEAD + "Subject To\n c: x0 + x1 = 2\n"
                                 "Bounds\n x0 = 0\n" + LP_BIN))
    # other
    add("missing-file", tmp / "nope.npz")
    add("folder", tmp)
    add("unknown-suffix", _text(tmp / "p.xyz", "1"))
    add("unknown-sample", Path("sample:nope"))
    return c


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err


def _one_line_error(rc, err, name):
    lines = err.strip().splitlines()
    assert rc == 2, (name, rc, err)
    assert len(lines) == 1 and lines[0].startswith("qcbo: error: "), (name, err)
    assert "Traceback" not in err, (name, err)


def test_every_malformed_file_is_one_line(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cases = _cases(src)
    before = set(src.iterdir())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, (path, extra) in cases.items():
        for command in ("info", "convert"):
            argv = [command, path, *extra]
            if command == "convert":
                argv.append(out_dir / "out.npz")
            started = time.perf_counter()
            rc, err = _run(capsys, argv)
            _one_line_error(rc, err, f"{command} {name}")
            assert time.perf_counter() - started < 10, name
            assert list(out_dir.iterdir()) == [], (name, list(out_dir.iterdir()))
    assert set(src.iterdir()) == before


def test_lying_headers_stay_small_in_memory(tmp_path):
    cases = _cases(tmp_path)
    names = ["ubqp-huge-n", "orlib-huge-n", "npz-npy-huge-shape", "npz-header-huge-n",
             "npz-compressed-lie", "set-member-huge"]
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest).
    script = ("import sys\nfrom qcbo.cli import main\n"
              "codes = [main(['info', p]) for p in sys.argv[1:]]\n"
              "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
              "print(codes, hwm[0].split()[1] if hwm else 0)\n")
    proc = subprocess.run([sys.executable, "-c", script, *[str(cases[n][0]) for n in names]],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    report = f"stdout {proc.stdout!r}\nstderr {proc.stderr!r}"
    assert proc.returncode == 0, report
    codes, rss_kib = proc.stdout.strip().splitlines()[-1].rsplit("]", 1)
    assert codes.strip("[").replace(" ", "") == ",".join(["2"] * len(names)), report
    assert int(rss_kib) < 1024 * 1024, f"peak RSS {int(rss_kib) / 1024:.0f} MiB"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qcbo: error: ")]
    assert len(errors) == len(names) and "Traceback" not in proc.stderr, report


def _manifest(tmp: Path, **changes) -> Path:
    source = tmp / "blocks.npz"
    if not source.exists():
        write_blockset(source, [random_problem(3, 1, seed=0)])
    data = {"format": "qcbo.braket-manifest", "version": 1, "device": "arn:aws:braket:::device",
            "shots": 10, "source": {"path": str(source), "k": None, "instance": None},
            "blocks": [{"index": 0, "fingerprint": "abc", "task_arn": None, "p": 1,
                        "mixer": "xy-ring", "angles": {"gamma": [0.1], "beta": [0.1]}}]}
    for key, value in changes.items():
        if key.startswith("block_"):
            data["blocks"][0][key[6:]] = value
        elif value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp / f"m{len(list(tmp.iterdir()))}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("changes", [
    {"source": None}, {"blocks": None}, {"blocks": []}, {"blocks": {"a": 1}},
    {"source": {"k": 3}}, {"source": "x.npz"}, {"device": None}, {"shots": "ten"},
    {"block_fingerprint": None}, {"block_task_arn": "12345"}, {"block_task_arn": 7},
    {"block_index": 3}, {"version": 7}, {"format": "other"},
])
def test_corrupt_manifests_are_one_line(tmp_path, capsys, changes):
    path = _manifest(tmp_path, **changes)
    before = set(tmp_path.iterdir())
    rc, err = _run(capsys, ["collect", path])
    _one_line_error(rc, err, str(changes))
    assert set(tmp_path.iterdir()) == before


def test_manifest_that_is_not_json(tmp_path, capsys):
    for text in ("{", "[1]", "\xff\xfe"):
        path = tmp_path / "m.json"
        path.write_text(text, encoding="latin-1")
        rc, err = _run(capsys, ["collect", path])
        _one_line_error(rc, err, text)


def test_bad_solve_options_and_seed_are_input_errors(tmp_path, capsys):
    path = tmp_path / "p.npz"
    write_native(path, random_problem(6, 3, seed=0))
    for argv in (["-o", "sweeps=abc", "--backend", "sa"], ["--seed", "-3"],
                 ["-o", "bogus=1"], ["-o", "hot=0.001", "-o", "cold=0.1", "--backend", "sa"],
                 ["-o", "initial=[1,0,0,0,0,0]", "--backend", "tabu"]):
        if argv[-1] in ("sa", "tabu"):
            pytest.importorskip("numba")
        rc, err = _run(capsys, ["solve", path, *argv])
        _one_line_error(rc, err, argv)


def test_unwritable_outputs_are_refused_before_work(tmp_path, capsys):
    path = tmp_path / "p.npz"
    write_native(path, random_problem(4, 2, seed=0))
    for out in (tmp_path / "no" / "such" / "x.npz", tmp_path, path / "inside.npz"):
        rc, err = _run(capsys, ["convert", path, out])
        _one_line_error(rc, err, out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_refused_before_work(tmp_path, capsys):
    path = tmp_path / "p.npz"
    write_native(path, random_problem(4, 2, seed=0))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    rc, err = _run(capsys, ["convert", path, locked / "x.npz"])
    _one_line_error(rc, err, "locked")
    assert "not writable" in err


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_native(tmp_path / "a.npz", random_problem(3, 1, seed=0))
        write_problem(tmp_path / "a.ubqp", random_problem(3, None, seed=0))
        write_blockset(tmp_path / "s.npz", [random_problem(3, 1, seed=0)])
        os.umask(0o077)
        write_native(tmp_path / "b.npz", random_problem(3, 1, seed=0))
    finally:
        os.umask(old)
    for name in ("a.npz", "a.ubqp", "s.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "b.npz").stat().st_mode & 0o777 == 0o600


def test_closed_pipe_is_quiet(tmp_path):
    path = tmp_path / "set.npz"
    write_blockset(path, [random_problem(4, 2, seed=s) for s in range(400)])
    proc = subprocess.run(f"{sys.executable} -m qcbo.cli info {path} | head -1", shell=True,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_sigterm_during_convert_leaves_nothing(tmp_path):
    path = tmp_path / "set.npz"
    rng = np.random.default_rng(0)
    blocks = []
    for _ in range(12):
        a = rng.normal(size=(400, 400))
        blocks.append(Problem((a + a.T) / 2, 0.0, 200))
    write_blockset(path, blocks)
    out = tmp_path / "out" / "set.txt"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "qcbo.cli", "convert", str(path), str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not any(out.parent.iterdir()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if proc.returncode == 0:
        pytest.skip("convert finished before SIGTERM arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip() == "qcbo: terminated"
    assert list(out.parent.iterdir()) == []
