"""The untrusted side: runs in one run's process (forked from the sandbox's zygote, `jail.py`).

It knows nothing it could forge a verdict from: it gets the generated code and, one at a time,
the inputs; it answers with the function's output per input (`wire.encode`) and nothing else.
Expected outputs, the benchmark and the grader are never in its process, its file system or
its reach; the trusted parent measures each answer's time and compares it. Whatever the
generated code does to this process (patching it, writing to its pipes) can only change the
answers it sends, and an answer is only as good as the value it carries.

Protocol on fd 3 (in) and fd 4 (out), one line per message:
  in:  the setup (JSON: program, code, entry point, site paths), then one encoded input per line,
       each sent only after the previous answer arrived;
  out: `R` when loaded, then `O <encoded output>` or `E <exception name>` per input (`N 0|1`:
       the output is (not) None, for evalplus's not-None tasks when the output is not a bool);
       `L <exception name>` when loading failed.
Programs: `check` (exec the solution, call its entry point on each input, the way evalplus's
`unsafe_execute` does: its `reliability_guard`, IO swallowed, stdin unreadable) and `sanitize`
(evalplus's sanitizer on (code, entry point) inputs; no generated code is executed).
"""
from __future__ import annotations

import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402  (this folder, read-only; the job's cwd and /tmp are not on sys.path)


class _WriteOnly(io.StringIO):
    """evalplus's WriteOnlyStringIO: prints are swallowed, reads raise."""

    def read(self, *a, **k):  # noqa: D102
        raise IOError

    readline = readlines = read

    def readable(self) -> bool:  # noqa: D102
        return False


def _swallow() -> None:
    sink = _WriteOnly()
    sys.stdout = sys.stderr = sys.stdin = sink


def _evalplus_guard() -> None:
    """The Python-level switches evalplus's `reliability_guard` turns off, kept so that a
    solution evalplus fails (one that calls `open`, `os.getcwd`, `subprocess.Popen`, ...) fails
    here too and the published results reproduce. Not a security measure: that is the sandbox's."""
    import builtins
    import faulthandler
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.exit = builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
                 "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
                 "getcwd", "chdir"):
        setattr(os, name, None)
    builtins.open = None
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _preimport(code: str) -> None:
    """Import the modules the code imports before the guard is on: evalplus's checker process
    already has numpy and friends loaded when the solution imports them (with `open` gone,
    numpy could not be imported afresh). Only installed modules are imported, none are run."""
    import importlib
    import re

    for m in re.finditer(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import|import[ \t]+([\w., \t]+))",
                         code, re.M):
        for name in (m.group(1) or m.group(2)).split(","):
            name = name.strip().split(" ")[0]
            if name and not name.startswith(".") and name not in sys.modules:
                try:
                    importlib.import_module(name)
                except BaseException:
                    pass


def main() -> None:
    rd = os.fdopen(3, "rb")
    wr = os.fdopen(4, "wb")

    def send(line: str) -> None:
        wr.write(line.encode("utf-8", "backslashreplace") + b"\n")
        wr.flush()

    import json

    spec = json.loads(rd.readline())
    sys.path.extend(spec.get("site", []))
    if spec["program"] == "sanitize":
        try:
            from evalplus.sanitize import sanitize
        except BaseException as exc:
            send("L " + type(exc).__name__)
            return
        send("R")
        for line in rd:
            code, entry_point = wire.decode(line)
            try:
                send("O " + wire.encode(sanitize(code, entry_point)))
            except BaseException as exc:
                send("E " + type(exc).__name__)
                return
        return

    # program "check"
    globs: dict = {}
    try:
        _preimport(spec["code"])
        _evalplus_guard()
        _swallow()
        exec(spec["code"], globs)
        fn = globs[spec["entry_point"]]
    except BaseException as exc:
        send("L " + type(exc).__name__)
        return
    not_none = bool(spec.get("not_none"))
    decode, encode = wire.decode, wire.encode
    send("R")
    for line in rd:
        args = decode(line)
        try:
            _swallow()
            out = fn(*args)
            if not_none and type(out) is not bool:  # evalplus only asks: is it None?
                msg = "N 1" if out is not None else "N 0"
            else:
                msg = "O " + encode(out)
        except BaseException as exc:
            send("E " + type(exc).__name__[:100])
            return
        send(msg)


if __name__ == "__main__":
    main()
