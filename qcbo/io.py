"""Reading and writing problems: native .npz, block sets, UBQP text, OR-Library bqp.

Formats
-------
native (``.npz``)
    A NumPy zip opened with ``allow_pickle=False``: ``meta`` holds a JSON header
    ``{"format": "qcbo.problem", "version": 1, "n", "k", "offset", "labels", "metadata"}``
    and ``Q`` the symmetric (n, n) float64 matrix.
block set (``.npz``)
    Many problems in one zip, written as a stream so thousands of n = 1024 blocks never
    sit in memory together, and read lazily one member at a time: ``meta`` is
    ``{"format": "qcbo.blockset", "version": 1, "count", "problems": [header, ...]}``
    and member ``q{i:08d}`` the packed upper triangle (n (n + 1) / 2 float64, row-major)
    of problem i.
UBQP text (``.ubqp``)
    The iCBS reference solver's input: ``n m`` then m lines ``i j q`` (1-based), each
    unordered pair once, meaning Q[i, j] = Q[j, i] = q (a diagonal line is the linear
    term); minimisation; no offset, no k (give k with ``k=``). A repeated pair is
    refused (it is ambiguous: some writers mean the sum, some the last value).
OR-Library bqp (``.txt``, ``.bqp``)
    Beasley's files: the instance count, then per instance ``n nnz`` and nnz lines
    ``i j q`` (1-based, same pair convention), MAXIMISE xᵀQx. Read as minimisation of
    -xᵀQx; instance i (1-based) is named ``<stem>.<i>``. When ``best_known.json`` sits
    beside the file, its value for the instance goes to ``metadata["best_known"]``.

Every fault raises `InputError` with the file and the fault. Sizes are checked before
anything is allocated: a text header's n against the memory a dense Q needs, an npz
member's .npy header against the JSON header and the zip entry's size. Writes go to a
temporary file in the target's folder and are renamed into place (with the umask's
mode), so a failed or interrupted write leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import interop
from .errors import InputError
from .files import atomic_write, available_memory, check_output
from .problem import Problem

__all__ = [
    "FORMAT_VERSION",
    "read_problem",
    "read_problems",
    "iter_problems",
    "with_k",
    "write_problem",
    "read_native",
    "write_native",
    "BlockSet",
    "BlockSetWriter",
    "read_blockset",
    "write_blockset",
    "read_ubqp",
    "write_ubqp",
    "read_orlib",
    "write_orlib",
    "atomic_write",
    "check_output",
    "check_dense_size",
    "available_memory",
    "detect_format",
    "output_format",
    "Format",
    "FORMATS",
    "problem_count",
    "resolve_path",
    "sample_path",
    "SAMPLES",
]

FORMAT_VERSION = 1
_NATIVE = "qcbo.problem"
_BLOCKSET = "qcbo.blockset"


# --------------------------------------------------------------------------- helpers
def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB" if size >= 2**30 else f"{size / 2**20:.3g} MiB"


#: A reader holds about this many copies of a dense Q at once (parse, symmetrise, copy).
_DENSE_COPIES = 3


def check_dense_size(n: int, source: str) -> None:
    """Refuse a dense (n, n) float64 Q that would not fit in the memory available now."""
    need = _DENSE_COPIES * 8 * n * n
    if need > available_memory():
        raise InputError(
            f"{source}: n={n} needs {_gib(8 * n * n)} for the dense Q (x{_DENSE_COPIES} while "
            f"reading), more than the {_gib(available_memory())} of memory available"
        )


def _header(problem: Problem) -> dict[str, Any]:
    labels = problem.labels
    if labels is not None and not all(isinstance(v, (str, int)) for v in labels):
        raise InputError("labels must be str or int to be written to a file")
    return {
        "n": problem.n,
        "k": problem.k,
        "offset": problem.offset,
        "labels": None if labels is None else list(labels),
        "metadata": problem.metadata,
    }


def _problem_from_header(q: np.ndarray, head: Any, source: str) -> Problem:
    if not isinstance(head, dict):
        raise InputError(f"{source}: problem header is not a JSON object")
    try:
        n = head["n"]
        k = head.get("k")
        offset = head.get("offset", 0.0)
        labels = head.get("labels")
        metadata = head.get("metadata") or {}
    except KeyError as exc:
        raise InputError(f"{source}: problem header lacks {exc}") from None
    if not isinstance(n, int) or q.shape != (n, n):
        raise InputError(f"{source}: Q has shape {q.shape}, header says n={n!r}")
    if offset is None or not isinstance(offset, (int, float)):
        raise InputError(f"{source}: offset {offset!r} is not a finite number")
    return Problem(q, offset, k, labels=labels, metadata=metadata, source=source)


def _load_npz(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    try:
        return zipfile.ZipFile(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None


#: Members of a file are read only when their declared size fits this share of the
#: memory available (a member is one dense Q or one packed block).
_MEMBER_SHARE = 0.5


def _read_member(
    zf: zipfile.ZipFile, name: str, path: Path, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """One array of an npz, its .npy header checked before anything is allocated.

    ``shape``: the shape the file's own JSON header implies, or None (any). The header's
    shape must match it, its byte count must match the zip entry's declared size, and
    that size must fit in memory; zip reads never go past the declared size, so a
    compressed member cannot expand beyond what was checked.
    """
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        raise InputError(f"{path}: array {name!r} is missing (truncated file?)") from None
    try:
        with zf.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                head_shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version in ((2, 0), (3, 0)):
                head_shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject or dtype.kind not in "fiuU":
                raise InputError(f"{path}: array {name!r} has dtype {dtype}, expected numbers")
            if shape is not None and tuple(head_shape) != shape:
                raise InputError(f"{path}: array {name!r} has shape {tuple(head_shape)}, the "
                                 f"header implies {shape}")
            data_bytes = math.prod(head_shape) * dtype.itemsize
            if handle.tell() + data_bytes != info.file_size:
                raise InputError(
                    f"{path}: array {name!r} declares {data_bytes} bytes of data but its zip "
                    f"entry holds {info.file_size - handle.tell()} (truncated or corrupt)")
            budget = _MEMBER_SHARE * available_memory()
            if data_bytes > budget:
                raise InputError(f"{path}: array {name!r} needs {_gib(data_bytes)}, more than "
                                 f"the {_gib(budget)} of memory this reader may use")
        with zf.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, SyntaxError, RuntimeError) as exc:
        raise InputError(f"{path}: array {name!r} is corrupt ({exc})") from None


#: The JSON header of a block set grows with its block count (~200 bytes a block).
_META_MAX_BYTES = 256 * 2**20


def _read_meta(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        size = zf.getinfo("meta.npy").file_size
    except KeyError:
        raise InputError(f"{path}: array 'meta' is missing (not a qcbo .npz file?)") from None
    if size > _META_MAX_BYTES:
        raise InputError(f"{path}: 'meta' declares {_gib(size)}; a header is never that large")
    raw = _read_member(zf, "meta", path, ())
    if raw.dtype.kind != "U":
        raise InputError(f"{path}: 'meta' is not a JSON string")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: 'meta' is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "format" not in meta or "version" not in meta:
        raise InputError(f"{path}: 'meta' lacks a format name and version")
    if meta["format"] not in (_NATIVE, _BLOCKSET):
        raise InputError(f"{path}: unknown format {meta['format']!r}")
    if meta["version"] != FORMAT_VERSION:
        raise InputError(
            f"{path}: {meta['format']} version {meta['version']!r} is not supported "
            f"(this qcbo reads version {FORMAT_VERSION}); upgrade qcbo"
        )
    return meta


def _header_n(head: Any, source: str) -> int:
    n = head.get("n") if isinstance(head, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{source}: header lacks a valid n (got {n!r})")
    return n


def _write_member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as handle:
        np.lib.format.write_array(handle, np.asarray(array, order="C"), allow_pickle=False)


def _meta_array(meta: dict[str, Any]) -> np.ndarray:
    return np.array(json.dumps(meta, allow_nan=False))


# --------------------------------------------------------------------------- native
def write_native(path: str | os.PathLike, problem: Problem) -> None:
    """Write one problem in the native .npz format (atomically)."""
    meta = {"format": _NATIVE, "version": FORMAT_VERSION, **_header(problem)}
    with atomic_write(path) as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_member(zf, "meta", _meta_array(meta))
            _write_member(zf, "Q", problem.Q)


def read_native(path: str | os.PathLike) -> Problem:
    """Read a native .npz problem file."""
    path = resolve_path(path)
    with _load_npz(path) as zf:
        meta = _read_meta(zf, path)
        if meta["format"] != _NATIVE:
            raise InputError(f"{path}: is a {meta['format']} file, not a single problem")
        n = _header_n(meta, str(path))
        check_dense_size(n, str(path))
        q = _read_member(zf, "Q", path, (n, n))
        if q.dtype.kind not in "fiu":
            raise InputError(f"{path}: Q has dtype {q.dtype}, expected float64")
        return _problem_from_header(q.astype(np.float64, copy=False), meta, str(path))


# --------------------------------------------------------------------------- block sets
@functools.lru_cache(maxsize=8)
def _triu(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n)


def _pack(q: np.ndarray) -> np.ndarray:
    return q[_triu(q.shape[0])]


def _unpack(packed: np.ndarray, n: int, source: str) -> np.ndarray:
    if packed.ndim != 1 or packed.shape[0] != n * (n + 1) // 2:
        raise InputError(f"{source}: packed Q has shape {packed.shape}, expected ({n * (n + 1) // 2},)")
    q = np.zeros((n, n))
    iu = _triu(n)
    q[iu] = packed
    q.T[iu] = packed
    return q


class BlockSetWriter:
    """Stream problems into a block set file; the file appears only on `close`.

    >>> with BlockSetWriter("blocks.npz") as writer:
    ...     writer.add(problem)
    """

    def __init__(self, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None):
        self.path = Path(path)
        self._ctx = atomic_write(self.path)
        self._handle = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(self._handle, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._headers: list[dict[str, Any]] = []
        self._metadata = dict(metadata or {})
        self._closed = False

    def add(self, problem: Problem) -> int:
        """Append a problem; returns its index in the set."""
        if self._closed:
            raise InputError(f"{self.path}: block set writer is closed")
        index = len(self._headers)
        head = _header(problem)
        head["array"] = f"q{index:08d}"
        _write_member(self._zip, head["array"], _pack(problem.Q))
        self._headers.append(head)
        return index

    def __len__(self) -> int:
        return len(self._headers)

    def close(self) -> None:
        """Write the header and move the file into place."""
        if self._closed:
            return
        self._closed = True
        meta = {
            "format": _BLOCKSET,
            "version": FORMAT_VERSION,
            "count": len(self._headers),
            "metadata": self._metadata,
            "problems": self._headers,
        }
        try:
            _write_member(self._zip, "meta", _meta_array(meta))
            self._zip.close()
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop everything written so far; no file is left behind."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._zip.close()
        err = RuntimeError("aborted")
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, err, None)

    def __enter__(self) -> "BlockSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_blockset(
    path: str | os.PathLike, problems: Sequence[Problem], *, metadata: dict[str, Any] | None = None
) -> None:
    """Write many problems as one block set file (atomically)."""
    with BlockSetWriter(path, metadata=metadata) as writer:
        for problem in problems:
            writer.add(problem)


class BlockSet:
    """A block set opened for reading; problems are loaded one at a time.

    Supports ``len()``, indexing, iteration and use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = resolve_path(path)
        self._npz = _load_npz(self.path)
        try:
            meta = _read_meta(self._npz, self.path)
            if meta["format"] != _BLOCKSET:
                raise InputError(f"{self.path}: is a {meta['format']} file, not a block set")
            problems = meta.get("problems")
            if not isinstance(problems, list) or meta.get("count") != len(problems):
                raise InputError(f"{self.path}: block set header is inconsistent (count/problems)")
        except BaseException:
            self._npz.close()
            raise
        metadata = meta.get("metadata") or {}
        if not isinstance(metadata, dict):
            self._npz.close()
            raise InputError(f"{self.path}: block set metadata is not a JSON object")
        self.metadata: dict[str, Any] = metadata
        self._headers: list[dict[str, Any]] = problems

    def __len__(self) -> int:
        return len(self._headers)

    def __getitem__(self, index: int) -> Problem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"block {index} out of range for {len(self)} blocks")
        head = self._headers[index]
        source = f"{self.path}[{index % len(self)}]"
        n = _header_n(head, source)
        check_dense_size(n, source)
        array = head.get("array")
        if not isinstance(array, str):
            raise InputError(f"{source}: block header lacks its array name")
        packed = _read_member(self._npz, array, self.path, (n * (n + 1) // 2,))
        if packed.dtype.kind not in "fiu":
            raise InputError(f"{source}: Q has dtype {packed.dtype}, expected float64")
        q = _unpack(packed.astype(np.float64, copy=False), n, source)
        return _problem_from_header(q, head, source)

    def __iter__(self) -> Iterator[Problem]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> "BlockSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_blockset(path: str | os.PathLike) -> BlockSet:
    """Open a block set for lazy reading (close it, or use ``with``)."""
    return BlockSet(path)


# --------------------------------------------------------------------------- text formats
def _parse_numbers(tokens: list[str], path: Path, line_no: int, kinds: str) -> list[Any]:
    if len(tokens) != len(kinds):
        raise InputError(
            f"{path}:{line_no}: expected {len(kinds)} fields, got {len(tokens)}: {' '.join(tokens)!r}"
        )
    out: list[Any] = []
    for token, kind in zip(tokens, kinds):
        try:
            value = int(token) if kind == "i" else float(token)
        except ValueError:
            raise InputError(f"{path}:{line_no}: {token!r} is not a number") from None
        if kind == "f" and not math.isfinite(value):
            raise InputError(f"{path}:{line_no}: coefficient {token} is not finite")
        out.append(value)
    return out


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as text ({exc})") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if stripped:
            lines.append((number, stripped.split()))
    return lines


def _pairs_to_matrix(
    n: int, entries: list[tuple[int, int, float, int]], path: Path
) -> np.ndarray:
    """Dense Q from 1-based ``(i, j, q, line)``; each unordered pair may appear once."""
    check_dense_size(n, str(path))
    q = np.zeros((n, n))
    first_line: dict[tuple[int, int], int] = {}
    for i, j, value, line_no in entries:
        if not (1 <= i <= n and 1 <= j <= n):
            raise InputError(f"{path}:{line_no}: index ({i}, {j}) out of range 1..{n}")
        pair = (i, j) if i <= j else (j, i)
        if pair in first_line:
            raise InputError(
                f"{path}:{line_no}: pair {pair} already given on line {first_line[pair]}; "
                "the format lists each unordered pair once (add the values yourself)"
            )
        first_line[pair] = line_no
        if i == j:
            q[i - 1, i - 1] = value
        else:
            q[i - 1, j - 1] = value
            q[j - 1, i - 1] = value
    return q


def _check_entry_count(n: int, m: int, path: Path, line_no: int) -> None:
    if n < 1 or m < 0:
        raise InputError(f"{path}:{line_no}: bad sizes n={n}, m={m}")
    if m > n * (n + 1) // 2:
        raise InputError(f"{path}:{line_no}: {m} entries cannot fit n={n} "
                         f"(at most n (n + 1) / 2 = {n * (n + 1) // 2} pairs)")


def _matrix_to_pairs(q: np.ndarray) -> list[str]:
    iu, ju = np.nonzero(np.triu(q))
    return [f"{i + 1} {j + 1} {float(q[i, j])!r}" for i, j in zip(iu, ju)]


def read_ubqp(path: str | os.PathLike, *, k: int | None = None) -> Problem:
    """Read the iCBS reference UBQP text format (minimisation)."""
    path = resolve_path(path)
    lines = _data_lines(path)
    if not lines:
        raise InputError(f"{path}: empty file; expected a first line 'n m'")
    line_no, tokens = lines[0]
    n, m = _parse_numbers(tokens, path, line_no, "ii")
    _check_entry_count(n, m, path, line_no)
    body = lines[1:]
    if len(body) != m:
        raise InputError(f"{path}: header announces {m} entries, found {len(body)} (truncated?)")
    entries = []
    for line_no, tokens in body:
        i, j, value = _parse_numbers(tokens, path, line_no, "iif")
        entries.append((i, j, value, line_no))
    q = _pairs_to_matrix(n, entries, path)
    meta = {"name": path.stem, "source": str(path), "format": "ubqp"}
    return Problem(q, 0.0, k, metadata=meta, source=str(path))


def write_ubqp(path: str | os.PathLike, problem: Problem) -> None:
    """Write the UBQP text format. The format has no offset or k: both are dropped."""
    lines = _matrix_to_pairs(problem.Q)
    text = "\n".join([f"{problem.n} {len(lines)}", *lines]) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)


def _best_known(path: Path) -> dict[str, float]:
    candidate = path.parent / "best_known.json"
    if not candidate.exists():
        return {}
    try:
        data = json.loads(candidate.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(key): float(v) for key, v in data.items() if isinstance(v, (int, float))}


def read_orlib(
    path: str | os.PathLike, *, instance: int | None = None, k: int | None = None
) -> list[Problem]:
    """Read an OR-Library bqp file as minimisation problems (all, or one 1-based instance)."""
    path = resolve_path(path)
    lines = _data_lines(path)
    if not lines:
        raise InputError(f"{path}: empty file; expected the number of instances")
    line_no, tokens = lines[0]
    (count,) = _parse_numbers(tokens, path, line_no, "i")
    if count < 1:
        raise InputError(f"{path}:{line_no}: instance count {count} must be >= 1")
    if instance is not None and not 1 <= instance <= count:
        raise InputError(f"{path}: instance {instance} out of range; the file has 1..{count}")
    best = _best_known(path)
    problems: list[Problem] = []
    pos = 1
    for index in range(1, count + 1):
        if pos >= len(lines):
            raise InputError(f"{path}: file ends before instance {index} of {count} (truncated?)")
        line_no, tokens = lines[pos]
        n, nnz = _parse_numbers(tokens, path, line_no, "ii")
        _check_entry_count(n, nnz, path, line_no)
        body = lines[pos + 1 : pos + 1 + nnz]
        if len(body) != nnz:
            raise InputError(f"{path}: instance {index} announces {nnz} entries, file is truncated")
        pos += 1 + nnz
        if instance is not None and index != instance:
            continue
        entries = []
        for line_no, tokens in body:
            i, j, value = _parse_numbers(tokens, path, line_no, "iif")
            entries.append((i, j, value, line_no))
        q = -_pairs_to_matrix(n, entries, path)
        name = f"{path.stem}.{index}"
        meta: dict[str, Any] = {"name": name, "source": str(path), "format": "orlib",
                                "instance": index, "sense": "maximise, negated"}
        if name in best:
            meta["best_known"] = best[name]
        problems.append(Problem(q, 0.0, k, metadata=meta, source=f"{path} instance {index}"))
    if pos != len(lines):
        line_no, _ = lines[pos]
        raise InputError(f"{path}:{line_no}: unexpected data after the last instance")
    return problems


def write_orlib(
    path: str | os.PathLike, problems: Iterable[Problem], *, count: int | None = None
) -> None:
    """Write problems as an OR-Library bqp file (maximisation of -Q; offsets and k dropped).

    ``problems`` may be a lazy iterable (a block set) when ``count`` says how many it
    yields; they are then written one at a time.
    """
    if count is None:
        problems = list(problems)
        count = len(problems)
    if count < 1:
        raise InputError(f"{path}: nothing to write")
    written = 0
    with atomic_write(path, "w") as handle:
        handle.write(f"{count}\n")
        for problem in problems:
            pairs = _matrix_to_pairs(-problem.Q)
            handle.write(f"{problem.n} {len(pairs)}\n")
            handle.write("".join(line + "\n" for line in pairs))
            written += 1
        if written != count:
            raise InputError(f"{path}: {written} problems written, {count} announced")


# --------------------------------------------------------------------------- dispatch
#: Small files shipped with qcbo, so that examples run from a fresh clone:
#: ``sample:NAME`` works wherever a problem file is read.
#: The files are generated by qcbo/data/make_samples.py (see its docstring).
SAMPLES = {
    "bqp50": "bqp50-like.txt",  # OR-Library format, one n = 50 instance like Beasley's bqp50
    "block": "block.ubqp",      # UBQP text, one n = 24 pruning-like block (read with --k 12)
    "blocks": "blocks.npz",     # block set: 8 blocks, n = 32, k = 16, with provenance
}
_SAMPLE_PREFIX = "sample:"


def sample_path(name: str) -> Path:
    """The installed path of a shipped sample file (see `SAMPLES`)."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}; the samples are: "
                         + ", ".join(f"sample:{s}" for s in SAMPLES))
    return Path(__file__).resolve().parent / "data" / SAMPLES[name]


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, with ``sample:NAME`` replaced by the shipped file."""
    text = os.fspath(path)
    if isinstance(text, str) and text.startswith(_SAMPLE_PREFIX):
        return sample_path(text[len(_SAMPLE_PREFIX):])
    return Path(text)


@dataclass(frozen=True)
class Format:
    """One file format of the table `FORMATS`.

    ``suffixes``: the file name endings it uses (a suffix shared by two formats is told
    apart by `detect_format` from the content); ``read(path, k, instance)`` yields its
    problems; ``write(path, problem)`` writes one (None: read only; several problems
    go through `write_many`); ``keeps``: what a written file keeps of a Problem besides
    Q (from "offset", "k", "labels", "metadata"); the rest is lost, so ``lossy``.
    """

    name: str
    suffixes: tuple[str, ...]
    description: str
    read: Callable[[Path, "int | None", "int | None"], Iterator[Problem]]
    write: Callable[[Path, Problem], None] | None
    keeps: frozenset[str]

    @property
    def lossy(self) -> bool:
        return bool(_KEPT_FIELDS - self.keeps)

    def lost(self, problem: Problem) -> list[str]:
        """What writing ``problem`` in this format would lose (non-default fields only)."""
        present = {"offset": problem.offset != 0, "k": problem.k is not None,
                   "labels": problem.labels is not None, "metadata": bool(problem.metadata)}
        return [f for f in ("offset", "k", "labels", "metadata") if present[f] and f not in self.keeps]


_KEPT_FIELDS = frozenset({"offset", "k", "labels", "metadata"})


def _one(read: Callable[..., Problem], takes_k: bool = True):
    """A reader of one-problem files as a `Format.read` (instance 1 only)."""

    def iterate(path: Path, k: int | None, instance: int | None) -> Iterator[Problem]:
        if instance not in (None, 1):
            raise InputError(f"{path}: holds one problem; instance {instance} does not exist")
        yield read(path, k=k) if takes_k else with_k(read(path), k, path)

    return iterate


def _iter_blockset(path: Path, k: int | None, instance: int | None) -> Iterator[Problem]:
    with read_blockset(path) as blocks:
        if instance is not None and not 1 <= instance <= len(blocks):
            raise InputError(f"{path}: instance {instance} out of range; the set has 1..{len(blocks)}")
        indices = range(len(blocks)) if instance is None else [instance - 1]
        for i in indices:
            yield with_k(blocks[i], k, path)


def _iter_orlib(path: Path, k: int | None, instance: int | None) -> Iterator[Problem]:
    yield from read_orlib(path, instance=instance, k=k)


def _write_blockset_one(path: Path, problem: Problem) -> None:
    write_blockset(path, [problem])


#: Every supported format, by name. A new format is one entry here (and its reader and
#: writer); `detect_format`, `iter_problems`, `write_problem` and `convert` use the table.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("native", (".npz",), "one problem, qcbo's own .npz (exact)",
           _one(read_native, takes_k=False), write_native, _KEPT_FIELDS),
    Format("blockset", (".npz",), "many problems in one .npz, read lazily (exact)",
           _iter_blockset, _write_blockset_one, _KEPT_FIELDS),
    Format("ubqp", (".ubqp", ".txt", ".bqp", ".orlib"), "iCBS UBQP text: n, pairs i j value",
           _one(read_ubqp), write_ubqp, frozenset()),
    Format("orlib", (".txt", ".bqp", ".orlib"), "OR-Library bqp (maximisation, many instances)",
           _iter_orlib, lambda path, problem: write_orlib(path, [problem]), frozenset()),
    Format("dimod", (".json",), "dimod BinaryQuadraticModel JSON (labels as variables; qcbo entry: k, metadata)",
           _one(interop.read_dimod_json), interop.write_dimod_json, _KEPT_FIELDS),
    Format("lp", (".lp",), "LP file (docplex / qiskit-optimization subset)",
           _one(interop.read_lp), interop.write_lp, _KEPT_FIELDS),
)}

#: Where a suffix is shared, the format a written file gets.
_WRITE_DEFAULT = {".npz": "native", ".txt": "orlib", ".bqp": "orlib", ".orlib": "orlib"}


def _suffix_list() -> str:
    names = sorted({x for f in FORMATS.values() for x in f.suffixes})
    return ", ".join(names)


def detect_format(path: str | os.PathLike) -> str:
    """The `FORMATS` name of a file: from its suffix, and where two formats share one,
    from its content (the .npz header; the first line of a text file)."""
    path = resolve_path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a problem file")
    suffix = path.suffix.lower()
    candidates = [f.name for f in FORMATS.values() if suffix in f.suffixes]
    if not candidates:
        raise InputError(f"{path}: unknown file type {suffix or '(none)'}; use one of "
                         f"{_suffix_list()} (see `qcbo convert --help`)")
    if len(candidates) == 1:
        return candidates[0]
    if suffix == ".npz":
        with _load_npz(path) as npz:
            return "native" if _read_meta(npz, path)["format"] == _NATIVE else "blockset"
    lines = _data_lines(path)
    if lines and len(lines[0][1]) == 1:
        return "orlib"
    if lines and len(lines[0][1]) == 2:
        return "ubqp"
    raise InputError(f"{path}: cannot tell the text format from its first line")


def output_format(path: str | os.PathLike) -> Format:
    """The format a file written to ``path`` gets, from its suffix."""
    suffix = Path(path).suffix.lower()
    name = _WRITE_DEFAULT.get(suffix)
    if name is None:
        names = [f.name for f in FORMATS.values() if suffix in f.suffixes and f.write]
        name = names[0] if names else None
    if name is None:
        raise InputError(f"{path}: unknown output type {suffix or '(none)'}; use one of "
                         f"{_suffix_list()}")
    return FORMATS[name]


def iter_problems(
    path: str | os.PathLike, *, k: int | None = None, instance: int | None = None
) -> Iterator[Problem]:
    """Yield the problems of any supported file (block sets lazily).

    ``k`` sets the cardinality of problems from formats that carry none (UBQP,
    OR-Library, dimod BQM); ``instance`` picks one (1-based) problem of a multi-problem
    file. ``path`` may name a shipped sample as ``sample:NAME``.
    """
    path = resolve_path(path)
    count = 0
    for problem in FORMATS[detect_format(path)].read(path, k, instance):
        count += 1
        yield problem
    if count == 0:
        raise InputError(f"{path}: holds no problems")


def with_k(problem: Problem, k: int | None, path: str | os.PathLike) -> Problem:
    """``problem`` with cardinality ``k`` (None: unchanged); InputError, naming ``path``,
    when it already has another k or k is out of range."""
    if k is None or k == problem.k:
        return problem
    if problem.k is not None:
        raise InputError(f"{path}: the problem already has k={problem.k}; --k {k} conflicts")
    try:
        return problem.replace(k=k)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_problems(
    path: str | os.PathLike, *, k: int | None = None, instance: int | None = None
) -> list[Problem]:
    """All problems of a file (see `iter_problems`)."""
    return list(iter_problems(path, k=k, instance=instance))


def problem_count(path: str | os.PathLike, *, instance: int | None = None) -> int:
    """How many problems `iter_problems` yields, read from headers only (cheap)."""
    if instance is not None:
        return 1
    path = resolve_path(path)
    fmt = detect_format(path)
    if fmt == "blockset":
        with read_blockset(path) as blocks:
            return len(blocks)
    if fmt == "orlib":
        line_no, tokens = _data_lines(path)[0]
        return int(_parse_numbers(tokens, path, line_no, "i")[0])
    return 1


def read_problem(
    path: str | os.PathLike, *, k: int | None = None, instance: int | None = None
) -> Problem:
    """Exactly one problem; a multi-problem file needs ``instance`` (1-based)."""
    problems = read_problems(path, k=k, instance=instance)
    if len(problems) != 1:
        raise InputError(
            f"{path}: holds {len(problems)} problems; choose one with --instance 1..{len(problems)}"
        )
    return problems[0]


def write_problem(path: str | os.PathLike, problem: Problem) -> None:
    """Write one problem in the format its suffix names (see `output_format`)."""
    fmt = output_format(path)
    assert fmt.write is not None
    fmt.write(Path(path), problem)
