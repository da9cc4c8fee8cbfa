"""The house rules, checked on the import graph: the core never imports streamlit; shared parts know no
lab; a lab imports shared parts, never another lab; a view imports only its own lab."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from views.registry import LABS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("core", "data", "nets", "train", "render")  # explorer/<part>: shared by every lab


def _imports(path: Path) -> set[str]:
    """Every module a file imports, absolute (relative imports resolved), including imports in functions."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _lab_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["explorer", "labs"] else None


def test_the_core_never_imports_streamlit() -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _files("explorer") for m in _imports(p)
           if m == "streamlit" or m.startswith("streamlit.") or m.startswith("views")]
    assert not bad, bad


@pytest.mark.parametrize("part", SHARED)
def test_shared_parts_import_no_lab(part: str) -> None:
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _files(f"explorer/{part}") for m in _imports(p)
           if _lab_of(m)]
    assert not bad, bad


def test_no_lab_imports_another_lab() -> None:
    bad = []
    for p in _files("explorer/labs"):
        own = p.relative_to(ROOT / "explorer" / "labs").parts[0]
        bad += [f"{p.relative_to(ROOT)} imports {m}" for m in _imports(p) if _lab_of(m) not in (None, own)]
    assert not bad, bad


def test_every_lab_package_is_registered_and_every_view_imports_only_its_own_lab() -> None:
    packages = {p.name for p in (ROOT / "explorer" / "labs").iterdir() if (p / "__init__.py").is_file()}
    assert packages == {lab.slug for lab in LABS}
    bad = []
    for lab in LABS:
        bad += [f"{lab.path} imports {m}" for m in _imports(ROOT / lab.path) if _lab_of(m) not in (None, lab.slug)]
    assert not bad, bad


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import scan resolves relative imports and imports inside functions (so a hidden one is caught)."""
    f = ROOT / "explorer" / "labs" / "boundaries" / "_probe_for_test.py"
    f.write_text("def f():\n    from ..memorisation import lab\n    from . import run\n")
    try:
        mods = _imports(f)
    finally:
        f.unlink()
    assert "explorer.labs.memorisation.lab" in mods and "explorer.labs.boundaries.run" in mods


def _cache_constructions(path: Path) -> list[int]:
    """Lines where a file calls Cache(...) (by name or as module.Cache)."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and (getattr(node.func, "id", None) == "Cache"
                                               or getattr(node.func, "attr", None) == "Cache")]


def test_a_cache_is_built_only_in_explorer_core_cache() -> None:
    """One place builds Cache objects (default_cache, shipped_cache); everything else is handed one."""
    home = ROOT / "explorer" / "core" / "cache.py"
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in [*_files("explorer"), *_files("views"), ROOT / "app.py"]
           if p != home for line in _cache_constructions(p)]
    assert not bad, bad
    assert _cache_constructions(home), "the checker should see cache.py's own constructions"


def test_no_import_loops_in_the_core() -> None:
    """No module of explorer/ reaches itself through its imports (imports inside functions included: an
    import loop hidden in a function is still a loop)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in _files("explorer")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    loops = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                loops.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not loops, loops


def test_a_lab_s_tests_import_only_that_lab() -> None:
    """tests/labs/<slug>/ tests one lab; what crosses labs (they meet in the cache) lives in tests/integration/."""
    bad = []
    for p in _files("tests/labs"):
        own = p.relative_to(ROOT / "tests" / "labs").parts[0]
        bad += [f"{p.relative_to(ROOT)} imports {m}" for m in _imports(p) if _lab_of(m) not in (None, own)]
    assert not bad, bad
