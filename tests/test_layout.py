"""The package layout stays true (docs/architecture.md): the import graph of refinegan, built from
the source with ast (every import, module level or inside a function), has no cycle and no
forbidden edge, and no module imports another module's private names."""

import ast
from pathlib import Path

from tests.conftest import ROOT

PKG = ROOT / "refinegan"
STAGES = ("sim", "target", "refiner", "compare")
ENTRY = {"refinegan.cli", "refinegan.__main__"}  # the command line may call every stage
# stage -> the other stages it may import (DESIGN: the mock target draws the sim population)
ALLOWED = {"sim": set(), "target": {"sim"}, "refiner": set(), "compare": set()}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    return {_module_name(p, root): p for p in sorted((root / "refinegan").rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(mods: dict[str, Path]):
    """(importer, imported module, imported names) for every import of a refinegan module."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "refinegan":
                        out.append((mod, alias.name, []))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, is_pkg, node.level, node.module)
                if target.split(".")[0] != "refinegan":
                    continue
                names = [a.name for a in node.names]
                # `from . import x` imports the submodule x when there is one
                subs = [n for n in names if f"{target}.{n}" in mods]
                for n in subs:
                    out.append((mod, f"{target}.{n}", []))
                rest = [n for n in names if n not in subs]
                if rest or not subs:
                    out.append((mod, target, rest))
    return out


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if mod in ENTRY:
        return "entry"
    if len(parts) > 2 and parts[1] in STAGES or (len(parts) == 2 and parts[1] in STAGES):
        return parts[1]
    return "core"


def _graph(root: Path = ROOT):
    mods = _modules(root)
    edges = {}
    for a, b, _ in _imports(mods):
        if b in mods and b != a and not mods[b].name == "__init__.py":
            edges.setdefault(a, set()).add(b)
    return mods, edges


def test_the_stage_packages_exist():
    mods = _modules()
    for stage in STAGES:
        assert f"refinegan.{stage}" in mods
    for core in ("config", "errors", "io", "noise", "atomic", "seeds"):
        assert f"refinegan.{core}" in mods


def _cycles(mods, edges) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m)
    return found


def _forbidden(edges) -> list[str]:
    bad = []
    for a, targets in edges.items():
        la = _layer(a)
        for b in targets:
            lb = _layer(b)
            if la == "entry" or lb == "core" or lb == la:
                continue
            if la == "core" or lb not in ALLOWED[la]:
                bad.append(f"{a} ({la}) imports {b} ({lb})")
    return sorted(bad)


def _private(mods) -> list[str]:
    return [f"{a} imports {n} from {b}" for a, b, names in _imports(mods)
            for n in names if n.startswith("_") and not n.startswith("__") and b != a]


def test_no_import_cycles():
    cycles = _cycles(*_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_dependencies_run_one_way():
    bad = _forbidden(_graph()[1])
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = _private(_modules())
    assert not bad, "\n".join(bad)


def test_the_checker_finds_a_cycle_a_forbidden_edge_and_a_private_import(tmp_path):
    """Run the checks on a small package with one of each defect (lazy imports count too)."""
    files = {
        "refinegan/__init__.py": "",
        "refinegan/noise.py": "from .sim import population\n",  # core -> stage: forbidden
        "refinegan/sim/__init__.py": "",
        "refinegan/sim/population.py": "X = 1\n",
        "refinegan/compare/__init__.py": "",
        "refinegan/compare/a.py": "def f():\n    from .b import g\n",
        "refinegan/compare/b.py": "from . import a\nfrom ..noise import _hidden\n",
        "refinegan/refiner/__init__.py": "",
        "refinegan/refiner/train.py": "from ..compare.a import f\n",  # stage -> stage: forbidden
        "refinegan/target/__init__.py": "",
        "refinegan/target/mock.py": "from ..sim.population import X\n",  # allowed
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mods, edges = _graph(tmp_path)
    assert _cycles(mods, edges) == [["refinegan.compare.a", "refinegan.compare.b", "refinegan.compare.a"]]
    assert _forbidden(edges) == [
        "refinegan.noise (core) imports refinegan.sim.population (sim)",
        "refinegan.refiner.train (refiner) imports refinegan.compare.a (compare)"]
    assert _private(mods) == ["refinegan.compare.b imports _hidden from refinegan.noise"]
