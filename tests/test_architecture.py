"""The shape of the code, checked from the source (ast): the import graph of ``bnb``, ``relaxations`` and
``heuristics`` has no cycle, imports run one way between the layers of ``bnb`` (cli > runs > pipeline, theory >
engine > io > the base modules), ``relaxations`` and ``heuristics`` never import ``bnb``, and no module imports
or reads another module's private (underscore) name. Every import counts, also one inside a function.

docs/architecture.md draws the same map.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bnb", "relaxations", "heuristics")

# rank of each layer of bnb: a module may import its own layer or a lower one, never a higher one
LAYERS = {"bnb": 0, "bnb.io": 1, "bnb.engine": 2, "bnb.pipeline": 3, "bnb.theory": 3, "bnb.runs": 4, "bnb.cli": 5}
# layers of one rank that must not import each other
SIBLINGS = {("bnb.pipeline", "bnb.theory"), ("bnb.theory", "bnb.pipeline")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = all_modules()


def is_package(name: str) -> bool:
    return MODULES.get(name, Path("x.py")).name == "__init__.py"


def resolve_from(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package(module):
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path):
    """``(target module, imported name or None, line)`` for every import of ``module`` in our packages."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = resolve_from(module, node)
            if target.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def graph() -> dict[str, set[str]]:
    g = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for target, _, _ in imports_of(m, path):
            if target in MODULES and target != m:
                g[m].add(target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> str | None:
    if not module.startswith("bnb"):
        return None
    parts = module.split(".")
    if len(parts) >= 2 and ".".join(parts[:2]) in LAYERS:
        return ".".join(parts[:2])
    return "bnb"


def test_the_packages_are_found():
    # the checks below would pass vacuously on an empty tree
    assert len(MODULES) > 60
    for layer in LAYERS:
        assert layer in MODULES, f"layer package {layer} missing"


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_run_one_way():
    bad = []
    for m, path in MODULES.items():
        for target, _, line in imports_of(m, path):
            src, dst = layer_of(m), layer_of(target)
            if m.split(".")[0] in ("relaxations", "heuristics") and target.split(".")[0] == "bnb":
                bad.append(f"{m}:{line} imports {target} (relaxations/ and heuristics/ never import bnb/)")
            if m.startswith("relaxations") and target.startswith("heuristics"):
                bad.append(f"{m}:{line} imports {target} (relaxations/ never imports heuristics/)")
            if src is None or dst is None:
                continue
            if LAYERS[dst] > LAYERS[src] or (src, dst) in SIBLINGS:
                bad.append(f"{m}:{line} imports {target} ({src} may not import {dst})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def private_uses(module: str, path: Path):
    """``from X import _name`` of another module, and ``alias._name`` where ``alias`` is another module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom):
            target = resolve_from(module, node)
            if target.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
                elif a.name.startswith("_") and not a.name.startswith("__") and target != module:
                    yield f"{module}:{node.lineno} imports {target}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                yield f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}"


def test_no_private_names_across_modules():
    bad = [use for m, path in MODULES.items() for use in private_uses(m, path)]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", sorted(m for m in MODULES if is_package(m)))
def test_every_package_says_its_role(pkg):
    doc = ast.get_docstring(ast.parse(MODULES[pkg].read_text()))
    assert doc and doc.strip(), f"{pkg}/__init__.py has no docstring naming its role"


def test_ruff_is_clean():
    """The lint rules of pyproject.toml hold on the whole tree (ruff comes with the dev extra)."""
    import shutil
    import subprocess
    import sys
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([ruff, "check", "--no-cache", "--quiet", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
