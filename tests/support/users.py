"""Run a check as an unprivileged user, for tests of read-only folders.

Permission bits mean nothing to root (CAP_DAC_OVERRIDE): a folder made read-only with chmod is
still writable for a test suite running as root, as in our containers. :func:`unprivileged`
calls a function in a forked child that first drops to user ``nobody``, so the kernel really
refuses the writes; as any other user it simply calls the function.

The child only runs the function and reports back through a pipe; :func:`shared_tmp` gives a
folder ``nobody`` may enter (pytest's own temp folders are private to their owner).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NOBODY = 65534


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A temporary folder everyone can enter (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="dogbreeds-shared-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def make_read_only(folder: Path) -> None:
    """``folder`` and everything under it read-only (r-x for folders, r-- for files)."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def unprivileged(function: Callable[..., Any], *args: Any, **kwargs: Any
                 ) -> tuple[str, Any, str]:
    """``function(*args, **kwargs)`` as user nobody when this process is root, else directly.

    Returns ``("ok", result, stderr)`` or ``("raised", "<Type>: <message>", stderr)``;
    ``SystemExit`` is reported as ``("exit", code, stderr)``.
    """
    if kwargs:
        function = functools.partial(function, **kwargs)
    if os.geteuid() != 0:
        return _call(function, args)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = _call(function, args)
            payload = pickle.dumps(outcome)
        except BaseException:
            payload = pickle.dumps(("raised", traceback.format_exc(), ""))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    return pickle.loads(payload)


def _call(function: Callable[..., Any], args: tuple) -> tuple[str, Any, str]:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            result = function(*args)
    except SystemExit as exc:
        return "exit", exc.code, stderr.getvalue()
    except Exception as exc:  # noqa: BLE001  (reported to the test, which asserts on it)
        return "raised", f"{type(exc).__name__}: {exc}", stderr.getvalue()
    return "ok", repr(result), stderr.getvalue()
