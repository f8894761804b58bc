"""A run folder that cannot be lost: one writer at a time, no silent overwrite, no debris.

- `make_run_folder(path)`: the folder checked writable (`paths.check_writable`) and created.
- `RunLock(path)`: an exclusive `flock` on `<run>/.lock`, held while a training writes. A second
  training into the same folder gets one clear line; the kernel drops the lock when the holder
  dies (even by `kill -9`), so a crash never leaves a stale lock behind.
- `describe_run(path)`: what a folder already holds ("a run at step 200", ...), or None.
- `clear_run(path)`: removes a run's files (only those) for `--overwrite`.
- `tidy(path)`: removes temporary checkpoint folders a killed save left behind and restores a
  checkpoint caught between its two renames.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from .errors import ConfigError
from .paths import check_writable

# The file that makes a folder a DGLM run (`dlms dglm train`), which other commands recognise and refuse.
DGLM_RUN_CONFIG = "dglm_config.yaml"

LOCK_FILE = ".lock"
# What a training writes into its folder; `clear_run` removes exactly these.
RUN_FILES = ("checkpoint", ".checkpoint.old", "best", ".best.old", "metrics.jsonl", "config.yaml")
_OUT_DIR = "train.out_dir"

try:  # POSIX; elsewhere the lock is advisory only through the lock file's presence
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class RunFolderBusy(ConfigError):
    """Another process is training into the same run folder."""


def _why(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def make_run_folder(run_dir: str | Path) -> Path:
    """Create the run folder `run_dir`, once `paths.check_writable` says it can be written."""
    run = check_writable(run_dir, _OUT_DIR)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {_OUT_DIR} '{run}' ({_why(exc)}); pass a path you can write to") from None
    return run


class RunLock:
    """An exclusive lock on a run folder (a context manager; `acquire` / `release` also work)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write the run folder {_OUT_DIR} '{self.path.parent}' ({_why(exc)}); "
                              "choose a folder you can write to") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderBusy(_busy_message(self.path.parent, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def ensure_free(run_dir: str | Path) -> None:
    """RunFolderBusy if another process holds the folder's lock; checked without taking the lock
    and without writing anything."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # unreadable: `RunLock.acquire` reports it when the training starts
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        raise RunFolderBusy(_busy_message(path.parent, holder)) from None
    finally:
        os.close(fd)


def _busy_message(run: Path, holder: str) -> str:
    return (f"run folder '{run}' is in use by another training (pid {holder}); wait for it to finish, "
            "or train into another folder (train.out_dir)")


def describe_run(run_dir: str | Path) -> str | None:
    """A short description of the run `run_dir` holds ('a run at step 200 of 1400'), or None
    when it holds none (missing, empty, or only files a training does not write)."""
    run = Path(run_dir)
    if not run.is_dir():
        return None
    present = [name for name in RUN_FILES if (run / name).exists()]
    if not present:
        return None
    for name in ("checkpoint", ".checkpoint.old"):
        state_file = run / name / "trainer_state.json"
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            return f"a run at step {state['step']} of {state.get('total_steps', '?')}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return f"a run without a checkpoint yet ({', '.join(present)})"


def clear_run(run_dir: str | Path) -> None:
    """Remove the files of a run (see RUN_FILES) and nothing else, for `--overwrite`."""
    run = Path(run_dir)
    for name in RUN_FILES:
        target = run / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    tidy(run)


def tidy(run_dir: str | Path) -> list[str]:
    """Remove what a killed save left behind (`.<name>.tmp-<pid>` folders and files, write
    probes); when a checkpoint was
    caught between its two renames (only `.<name>.old` exists), put it back. Call it only while
    holding the run's lock. Returns the names removed or restored."""
    run = Path(run_dir)
    done = []
    if not run.is_dir():
        return done
    for entry in sorted(run.iterdir()):
        if entry.name.startswith(".") and (".tmp-" in entry.name or entry.name.startswith(".write-test-")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            done.append(entry.name)
    for name in ("checkpoint", "best"):
        final, old = run / name, run / f".{name}.old"
        if old.is_dir():
            if final.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.rename(final)
            done.append(old.name)
    return done
