"""The docs run as written: every ```bash and ```python block of README.md and docs/*.md, in
order, one temporary working directory per file (so a fresh machine's view: no runs/ yet).

* ```python blocks share one namespace per file and run statement by statement; a statement
  may raise only if its own lines name the exception (or a base class) in a comment
  (``# ValueError ...``).
* ```bash blocks: each command (lines joined at ``\\``, split at ``&&``/``;``, ``VAR=value``
  prefixes applied) runs in-process: ``python -m MOD ARGS`` through ``runpy`` (exit status 0
  required, non-zero if the line's comment says ``error`` or ``fails``), ``python FILE ARGS``
  likewise. ``python -m train`` gets :data:`TRAIN_OVERRIDES`
  appended (a tiny model, 2 steps, no sample) so the docs cost seconds, not minutes; so do
  Python calls of ``train_and_evaluate``. Installing (``python3 -m venv``, ``. activate``,
  ``pip install``) and the test suite itself (``python -m pytest``) are skipped: this process
  is the installed package.
* A bash block with more shell than that (redirections, pipes, here-documents, ``$(...)``,
  ``cd``, ``export``) runs whole in ``bash -e`` in a subprocess, with ``python``/``python3``
  on ``PATH`` shims that append the same overrides to ``python -m train``.
* A block preceded by ``<!-- skip-test -->`` (optionally ``<!-- skip-test: why -->``) is
  pure illustration or too long for the suite (e.g. the 10-minute alignment runs).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import glob
import os
import re
import runpy
import shlex
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT)
                             for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]

#: settings appended to every ``python -m train`` of the docs (and applied to Python calls of
#: ``train_and_evaluate``): the same commands, cut short.
TRAIN_OVERRIDES: dict[str, Any] = dict(model_size="tiny", seq_len=32, batch_size=2, steps=2,
                                       eval_batches=1, sample_tokens=0, tensorboard=False)

_SKIP_MARK = re.compile(r"<!--\s*skip-test\b.*?-->")
_FENCE = re.compile(r"^```(\w+)\s*$")


@dataclasses.dataclass
class Block:
    path: str
    line: int
    lang: str
    text: str
    skip: bool


def blocks(path: str) -> list[Block]:
    """The fenced code blocks of a markdown file (every language; ``skip`` if marked)."""
    with open(os.path.join(ROOT, path)) as f:
        lines = f.read().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((x for x in reversed(lines[:i]) if x.strip()), "")
        out.append(Block(path, i + 1, m.group(1), "\n".join(lines[i + 1: j]),
                         bool(_SKIP_MARK.search(prev))))
        i = j + 1
    return out


def _train_argv() -> list[str]:
    out = []
    for k, v in TRAIN_OVERRIDES.items():
        f = "--" + k.replace("_", "-")
        out.append((f if v else "--no-" + f[2:]) if isinstance(v, bool) else f"{f}={v}")
    return out


def commands(text: str) -> Iterator[tuple[list[str], bool]]:
    """The commands of a bash block: ``(argv, expect_error)``; lines joined at ``\\``; a
    command whose line ends in a comment saying ``error``/``fails`` must exit non-zero."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = ""
        toks = list(lex)
        cut = next((i for i, t in enumerate(toks) if t.startswith("#")), len(toks))
        comment = " ".join(toks[cut:])
        cmds: list[list[str]] = [[]]
        for tok in toks[:cut]:
            if tok in ("&&", ";"):
                cmds.append([])
            elif tok in ("|", "||", "&", ">", ">>"):
                raise AssertionError(f"unsupported shell syntax {tok!r} in: {line}")
            else:
                cmds[-1].append(tok)
        cmds = [c for c in cmds if c]
        for i, c in enumerate(cmds):
            last = i == len(cmds) - 1
            yield c, last and bool(re.search(r"\b(error|fails)\b", comment, re.I))


@contextlib.contextmanager
def _env(assign: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in assign}
    os.environ.update(assign)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_install(argv: list[str]) -> bool:
    a = argv[0]
    return (a in (".", "source", "pip", "pip3")
            or (a.startswith("python") and argv[1:3] in (["-m", "venv"], ["-m", "pip"]))
            or (a.startswith("python") and argv[1:3] == ["-m", "pytest"]))


def run_command(argv: list[str], where: str, expect_error: bool = False) -> None:
    env = {}
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        k, _, v = argv.pop(0).partition("=")
        env[k] = v
    if not argv or _is_install(argv):
        return
    if argv[0] not in ("python", "python3"):
        r = subprocess.run(shlex.join(argv), shell=True, capture_output=True, text=True,
                           env={**os.environ, **env,  # the checkout's reference/, scripts/
                                "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
                           # torchrun's 8 processes take ~50 s to import torch and transformers
                           # on 2 warm cores (a fresh venv's cold files: over 120 s in CI once)
                           timeout=480)
        assert (r.returncode != 0) == expect_error, (
            f"{where}: {shlex.join(argv)}\n{r.stdout}\n{r.stderr}")
        return
    if argv[1] == "-m":
        mod, args = argv[2], argv[3:]
        if mod == "train":
            args = [*args, *_train_argv()]
        target, runner = mod, runpy.run_module
    else:
        target, args, runner = argv[1], argv[2:], runpy.run_path
    old_argv = sys.argv
    sys.argv = [target, *args]
    code: Any = 0
    try:
        with _env(env), warnings.catch_warnings():
            # runpy warns when the module was imported before (other tests import train.__main__)
            warnings.filterwarnings("ignore", ".*found in sys.modules", RuntimeWarning)
            runner(target, run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old_argv
    ok = code not in (0, None) if expect_error else code in (0, None)
    assert ok, f"{where}: {shlex.join(argv)} exited with {code!r}"


def run_python(block: Block, ns: dict[str, Any]) -> None:
    tree = ast.parse(block.text)
    lines = block.text.splitlines()
    for node in tree.body:
        src = "\n".join(lines[node.lineno - 1: node.end_lineno])
        code = compile(ast.Module([node], []), f"{block.path}:{block.line}", "exec")
        try:
            exec(code, ns)
        except Exception as e:
            comment = src.partition("#")[2]
            if not any(c.__name__ in comment for c in type(e).__mro__[:-2]):
                raise AssertionError(f"{block.path}, block at line {block.line}: {src!r} raised "
                                     f"{type(e).__name__}: {e}") from e


_INSTALL_LINE = re.compile(
    r"\s*(pip3?\s|python3?\s+-m\s+(venv|pip|pytest)\b|\.\s|source\s)")
_SHELL = re.compile(r"<<|[<>|]|\$\(|`|^\s*(cd|export)\b", re.M)


def needs_shell(text: str) -> bool:
    """Whether a bash block needs a real shell (see the module docstring)."""
    return bool(_SHELL.search(re.sub(r"'[^']*'|\"[^\"]*\"", "", text)))


def run_shell(block: Block, bindir: str) -> None:
    """Run a bash block in ``bash -e``, ``python -m train`` shortened by a PATH shim."""
    os.makedirs(bindir, exist_ok=True)
    extra = " ".join(shlex.quote(a) for a in _train_argv())
    for name in ("python", "python3"):
        shim = os.path.join(bindir, name)
        with open(shim, "w") as f:
            f.write(f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "train" ]; then\n'
                    f'  exec {shlex.quote(sys.executable)} "$@" {extra}\nfi\n'
                    f'exec {shlex.quote(sys.executable)} "$@"\n')
        os.chmod(shim, 0o755)
    script = "\n".join(ln for ln in block.text.splitlines() if not _INSTALL_LINE.match(ln))
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, (f"{block.path}, block at line {block.line} failed:\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def _shortened(fn: Any) -> Any:
    """``train_and_evaluate`` with :data:`TRAIN_OVERRIDES` applied to its config."""
    from train import TrainConfig

    def wrapped(config: Any, workdir: str) -> Any:
        if isinstance(config, TrainConfig):
            config = dataclasses.replace(config, **TRAIN_OVERRIDES)
        else:
            config = {**config, **TRAIN_OVERRIDES}
        return fn(config, workdir)

    return wrapped


def test_docs_have_code_blocks() -> None:
    langs = {b.lang for p in DOCS for b in blocks(p)}
    assert {"bash", "python"} <= langs
    readme = [b for b in blocks("README.md") if b.lang == "bash" and not b.skip]
    cmds = [c for b in readme for c, _ in commands(b.text)]
    # the README's training examples must be among the ones that run
    assert any(c[:3] == ["python", "-m", "train"] and "--resume" in c for c in cmds)
    assert any(c[:3] == ["python", "-m", "train"] and any(a.startswith("--schedule=") for a in c)
               for c in cmds)
    assert any(c[:3] == ["python", "-m", "train.plot"] for c in cmds)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One token cache for all docs (the built-in corpus is tokenized once)."""
    return str(tmp_path_factory.mktemp("docs_cache"))


@pytest.mark.parametrize("path", DOCS)
def test_doc_runs_as_written(path: str, tmp_path, monkeypatch, cache) -> None:
    todo = [b for b in blocks(path) if b.lang in ("bash", "python") and not b.skip]
    if not todo:
        pytest.skip(f"{path}: no runnable blocks")
    import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCHEDAX_CACHE", cache)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(train, "train_and_evaluate", _shortened(train.train_and_evaluate))
    monkeypatch.syspath_prepend(ROOT)
    ns: dict[str, Any] = {"__name__": "__docs__"}
    for b in todo:
        if b.lang == "python":
            run_python(b, ns)
        elif needs_shell(b.text):
            run_shell(b, os.path.join(str(tmp_path), ".docs-bin"))
        else:
            for argv, expect_error in commands(b.text):
                run_command(list(argv), f"{path}, block at line {b.line}", expect_error)
