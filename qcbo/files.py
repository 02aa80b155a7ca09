"""Writing files safely: outputs checked before work starts, atomic writes, memory.

No imports from the rest of qcbo but its errors, so that every module that writes
(io, interop, the backends, pruning) can use it without import cycles.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import InputError

__all__ = ["atomic_folder", "atomic_write", "check_out_folder", "check_outside",
           "check_output", "available_memory", "link_target", "writable_ancestor"]

#: The report every `qcbo prune` run writes; with the run's other files it marks a folder
#: a new run may replace (see `check_out_folder`).
RUN_MARKER = "report.json"


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def check_output(path: str | os.PathLike, what: str = "output",
                 inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse, before any work starts, an output path that cannot be written.

    Raises InputError when the folder is missing or not writable, ``path`` is a folder,
    something other than a regular file (a device, FIFO or socket, which a rename would
    replace), a symbolic link that does not resolve, or one of the command's ``inputs``
    (which it would overwrite). A symbolic link is checked at its target, which is what
    `atomic_write` replaces (the link survives); ``path`` is returned as given, so that
    its name (and extension) is the one the user typed.
    """
    path = Path(path)
    if not str(path).strip():
        raise InputError(f"{what}: the file name is empty")
    target, via = path, ""
    if path.is_symlink():
        target = link_target(path, what)
        via = f" (a link to {target})"
    if target.exists() and not target.is_dir() and not target.is_file():
        raise InputError(f"{what} {path}{via}: is not a regular file (a device, FIFO or "
                         "socket); choose a file name")
    for source in inputs:
        if target.resolve() == Path(source).resolve():
            raise InputError(f"{what} {path}{via}: would overwrite the input; choose another "
                             "name")
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InputError(f"{what} {path}{via}: is a folder, not a file")
    if not folder.is_dir():
        raise InputError(f"{what} {path}{via}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}{via}: folder {folder} is not writable")
    return path


def link_target(path: Path, what: str = "output") -> Path:
    """The file a symbolic link ``path`` finally names; InputError for a loop."""
    target = Path(os.path.realpath(path))
    if target.is_symlink():
        raise InputError(f"{what} {path}: is a symbolic link that does not resolve (a loop); "
                         "choose a file name")
    return target


def writable_ancestor(path: str | os.PathLike, what: str = "output") -> Path:
    """The nearest existing folder at or above ``path``, checked by writing a probe file
    there (not os.access: root passes that even on /proc); InputError otherwise."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise OSError(f"{probe} is not a folder")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".qcbo-probe-"):
            pass
    except OSError:
        raise InputError(f"{what} {path}: cannot write in {probe}; choose another {what}") \
            from None
    return probe


def check_out_folder(out: str | os.PathLike, what: str = "--out",
                     inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse, before any work, a folder output that cannot be written or must not be
    replaced: a file, an unwritable place, a non-empty folder that is not an earlier
    run's output (no ``report.json``), or one that holds one of ``inputs``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{what} {out}: exists and is not a folder; choose another {what}")
    writable_ancestor(out, what)
    real = Path(os.path.realpath(out))  # a symlinked folder: its target is replaced
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise InputError(f"{what} {out}: is the current folder (or holds it), which the "
                         f"output would replace whole; choose a sub-folder")
    for source in inputs:
        resolved = Path(source).resolve()
        if real == resolved or real in resolved.parents:
            raise InputError(f"{what} {out}: holds the input {source}, which the new output "
                             f"would replace; choose another {what}")
    if real.is_dir():
        entries = sorted(p.name for p in real.iterdir())
        if entries and not _earlier_run(set(entries)):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise InputError(f"{what} {out}: the folder holds files of something else "
                             f"({shown}) and would be replaced; choose a new or empty folder")
    return out


def check_outside(path: str | os.PathLike, folder: str | os.PathLike, what: str,
                  folder_what: str = "--out") -> None:
    """InputError when ``path`` lies inside ``folder``, an output replaced whole at the
    end of the run (`atomic_folder`), which would delete it."""
    if Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents:
        raise InputError(f"{what} {path}: inside {folder_what} {folder}, which is replaced "
                         f"whole when the run ends; write it beside {folder_what}")


def _earlier_run(entries: set[str]) -> bool:
    """Whether a folder's files are those of an earlier `qcbo prune` run: its report
    beside a classifier's pruned weights or a language model's sparsity table."""
    return RUN_MARKER in entries and bool(entries & {"pruned.safetensors", "sparsity.json"})


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed to ``out`` on success (an earlier
    ``out`` is replaced only then, as one rename); removed on any failure or interrupt.
    Check ``out`` with `check_out_folder` first."""
    out = Path(os.path.realpath(out))  # a symlinked folder: its target is replaced
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for path in tmp.rglob("*"):  # writers such as safetensors' leave 0600
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it into place only on success.

    The file gets the mode a plain ``open`` would give it (0666 less the umask, or the
    mode of the file it replaces), not mkstemp's 0600. Any failure, KeyboardInterrupt
    or SystemExit (the CLI turns SIGTERM into one) removes the temporary file.
    """
    path = check_output(path)
    target = link_target(path) if path.is_symlink() else path  # a link keeps pointing there
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        try:
            target_mode = os.stat(target).st_mode & 0o7777
        except OSError:
            target_mode = 0o666 & ~_umask()
        os.chmod(tmp, target_mode)
        if "b" in mode:
            handle = os.fdopen(fd, mode)
        else:
            handle = os.fdopen(fd, mode, encoding=encoding or "utf-8")
        with handle:
            yield handle
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        cap = (cgroup / "memory.max").read_text().strip()
        if cap != "max":
            used = int((cgroup / "memory.current").read_text())
            # The page cache counts as used but is given back on demand.
            for line in (cgroup / "memory.stat").read_text().splitlines():
                if line.startswith("inactive_file "):
                    used -= int(line.split()[1])
            limits.append(int(cap) - used)
    except (OSError, ValueError, IndexError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62
    return max(min(limits), 0)
