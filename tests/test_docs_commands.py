"""The commands that docs/performance.md cites still exist (issue 25, item 7): every ``bnb ...`` command parses
against today's CLI, every ``python benchmarks/X.py ...`` names a script whose own argument parser accepts it,
every ``--set section.key=value`` and ``--config FILE`` loads, every ``section.key`` the text names is a
configuration key (or a retired one, named as history), and every repository file or ``file::name`` it names
exists. Nothing is run: a document whose commands rot fails here, in seconds."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import io
import re
import shlex
import sys
from pathlib import Path
from unittest import mock

import click
import pytest

from bnb.cli.main import main as cli
from bnb.config import Config, load_config
from bnb.errors import ConfigError

from conftest import ROOT, require_bench

pytestmark = pytest.mark.fast

DOCS = [ROOT / "docs" / "performance.md"]
# options the text still names as history; each must really be gone (else it is a live key and checked as one)
RETIRED = {"bounds.rounding_margin"}
# scripts that read sys.argv without argparse: a check of their arguments
PLAIN_ARGS = {
    "suite_compare.py": lambda args: bool(args) and all("=" in a for a in args),
    "check_witness.py": lambda args: len(args) == 3,
}
REPO_DIRS = ("benchmarks", "bnb", "configs", "docs", "heuristics", "relaxations", "tests", "vnncomp")
_SPAN = re.compile(r"`([^`]+)`")
_KEY = re.compile(r"\b(?:general|attack|bounds|bab)\.[a-z_0-9]+")
_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]+\.(?:py|yaml|md|sh|csv))(?:::(\w+))?" % "|".join(REPO_DIRS))
_LINK = re.compile(r"\]\(([^)#\s]+)\)")


def config_keys() -> set[str]:
    cfg = Config()
    return {f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))}


def _is_command(text: str) -> bool:
    return text.startswith(("bnb ", "python benchmarks/", "benchmarks/")) and not text.startswith("bnb/")


def cited_commands(text: str) -> list[str]:
    """The commands of fenced and indented code blocks (continuation lines joined, comments dropped) and of
    inline code spans (which may wrap across lines)."""
    out, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        line = pending + " " + line.strip() if pending else line.strip()
        if line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        pending = ""
        line = re.split(r"\s#\s", line, maxsplit=1)[0].strip()
        if _is_command(line):
            out.append(line)
    for span in _SPAN.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
        span = " ".join(span.split())
        if _is_command(span):
            out.append(span)
    return out


def _script_parser(path: Path) -> argparse.ArgumentParser | None:
    """The ``argparse`` parser a script's ``main`` builds, caught at its ``parse_args`` call (nothing runs);
    None for a script without one (whose ``main`` is then not called: it would run)."""
    if "ArgumentParser(" not in path.read_text() or "def main(" not in path.read_text():
        return None
    name = f"_doc_script_{path.stem}"
    if name not in sys.modules:  # registered first: a script's dataclasses look their module up there
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        saved = list(sys.path)  # some scripts put their folder first on sys.path; the other tests must not see it
        try:
            spec.loader.exec_module(sys.modules[name])
        finally:
            sys.path[:] = saved
    module = sys.modules[name]
    caught = []

    class Caught(Exception):
        pass

    def grab(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    takes_argv = bool(inspect.signature(module.main).parameters)
    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab), mock.patch.object(sys, "argv", [str(path)]), \
            contextlib.suppress(Caught):
        module.main([]) if takes_argv else module.main()
    return caught[0] if caught else None


def check_command(command: str) -> str | None:
    """None when ``command`` exists and accepts its arguments today; otherwise why not."""
    try:
        words = shlex.split(command)
    except ValueError as e:
        return f"cannot split: {e}"
    if "..." in words:
        return "elided arguments ('...'): name them"
    if words[0] == "bnb":
        if len(words) < 2 or words[1] not in cli.commands:
            return f"no such bnb command: {words[1:2]}"
        if len(words) == 2:  # a mention of the command itself
            return None
        try:
            ctx = cli.commands[words[1]].make_context(words[1], words[2:])
        except click.ClickException as e:
            return f"bnb {words[1]}: {e.format_message()}"
        configs, sets = ctx.params.get("configs", ()), ctx.params.get("sets", ())
    else:
        path = ROOT / (words[1] if words[0] == "python" else words[0])
        args = words[2:] if words[0] == "python" else words[1:]
        if not path.is_file():
            return f"no such script: {path.relative_to(ROOT)}"
        if words[0] != "python" and not args:  # a mention of the script itself
            return None
        if path.name in PLAIN_ARGS:
            return None if PLAIN_ARGS[path.name](args) else f"{path.name}: bad arguments {args}"
        parser = _script_parser(path)
        if parser is None:  # a script that takes no options
            return None if not args else f"{path.name}: takes no arguments (no argparse parser in main), got {args}"
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(args)
        except SystemExit:
            return f"{path.name}: {err.getvalue().strip().splitlines()[-1]}"
        sets = getattr(ns, "sets", None) or getattr(ns, "set", None) or ()
        configs = getattr(ns, "config", None) or ()
    try:
        load_config([ROOT / c for c in configs], sets)
    except ConfigError as e:
        return f"configuration: {e}"
    return None


def test_every_cited_command_exists_and_accepts_its_options():
    bad = {}
    for doc in DOCS:
        commands = cited_commands(doc.read_text())
        assert len(commands) >= 20, f"{doc.name}: found only {len(commands)} commands; is the parser broken?"
        for command in commands:
            why = check_command(command)
            if why:
                bad[command] = why
    assert not bad, "\n".join(f"{c}\n    -> {w}" for c, w in bad.items())


def test_the_checker_rejects_rotten_commands():
    """Each kind of rot this file guards against is caught (so the test above can fail)."""
    good = ["bnb run ../shared/benchmarks/acasxu/instances.csv --config configs/acasxu.yaml --workers 2 --grace 5",
            "python benchmarks/fuzz.py --n 5 --seed 1 --set bounds.method=mn-crown",
            "python benchmarks/suite_compare.py base=a.csv mn=b.csv"]
    rotten = ["bnb run x.csv --in-process",                                   # an option that is gone
              "bnb verify NET.onnx",                                            # a missing argument
              "bnb run x.csv --set bounds.rounding_margin=1e-6",                 # a retired configuration key
              "bnb run x.csv --set bab.branching=sideways",                     # a value out of its choices
              "bnb run x.csv --config configs/nowhere.yaml",                    # a missing configuration file
              "bnb verify ... --timeout 60",                                    # elided arguments
              "bnb prove NET.onnx PROP.vnnlib",                                 # no such command
              "python benchmarks/fuzz.py --n 5 --no-such-flag",                 # a script option that is gone
              "python benchmarks/fuzz.py --n five",                             # a value of the wrong type
              "python benchmarks/dag_chain_bench.py",                           # a script not in the repository
              "python benchmarks/startup_bench.py --set bounds.nothing=1"]      # a bad key through a script
    assert [c for c in good if check_command(c)] == []
    assert [c for c in rotten if check_command(c) is None] == []


def test_every_named_configuration_key_exists():
    keys = config_keys()
    assert not RETIRED & keys, "a retired key is live again: check it as one"
    for doc in DOCS:
        named = set(_KEY.findall(doc.read_text()))
        assert named, f"{doc.name} names no configuration key"
        assert named - keys <= RETIRED, f"{doc.name}: unknown keys {sorted(named - keys - RETIRED)}"


def test_every_named_repository_file_and_definition_exists():
    for doc in DOCS:
        text = doc.read_text()
        missing = []
        for rel, name in _PATH.findall(text):
            path = ROOT / rel
            if not path.is_file():
                missing.append(rel)
            elif name and not re.search(rf"^\s*(?:def|class)\s+{name}\b|^{name}\s*=", path.read_text(), re.M):
                missing.append(f"{rel}::{name}")
        for target in _LINK.findall(text):
            if not target.startswith(("http:", "https:")) and not (doc.parent / target).exists():
                missing.append(target)
        assert not missing, f"{doc.name}: {missing}"


def test_benchmark_paths_in_cited_commands_exist():
    """The data the commands read (``../shared/benchmarks/...``) is where they say."""
    require_bench()
    for doc in DOCS:
        paths = {w for c in cited_commands(doc.read_text()) for w in shlex.split(c)
                 if w.startswith("../shared/benchmarks/")}
        assert paths
        assert [p for p in sorted(paths) if not (ROOT / p).exists()] == []
