"""The tree is the architecture: packages by domain, dependencies one way, no import cycles.

The import graph is read from the source (every `import` and `from ... import`, at module level,
inside functions and under TYPE_CHECKING alike), so a cycle hidden in a function body counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Who may import whom, package by package (app's top-level modules are `app.NAME` too). A package
# may always import itself. `web` and `cli` are on top, `store` at the bottom.
ALLOWED = {
    "settings": set(),
    "resources": set(),
    "templating": {"resources"},
    "store": {"settings", "resources"},
    "statistics": set(),
    "accounts": {"store", "settings"},
    "studies": {"store", "statistics", "settings"},
    "assignment": {"store", "statistics", "settings"},
    "analysis": {"store", "statistics", "studies"},
    "reporting": {"analysis", "studies", "statistics", "store", "templating"},
    "web": {"assignment", "reporting", "analysis", "studies", "accounts", "statistics", "store", "templating",
            "settings", "resources"},
    "cli": {"reporting", "analysis", "studies", "accounts", "assignment", "statistics", "store", "settings",
            "resources", "templating"},
    "main": {"web", "store", "settings", "templating", "resources"},
}
# What each app package may take from the GPU side: the manifest only, except the command line.
SAMPLER_ALLOWED = {"studies": {"sampler.manifest"}, "web": {"sampler.manifest"}, "cli": None}


def _modules(top: str) -> dict[str, Path]:
    mods = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules("app") | _modules("sampler")


def _imports(name: str, path: Path) -> set[str]:
    """Modules of app/sampler that `name` imports (the most specific existing module named)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-loops."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_the_cycle_finder_finds_a_cycle_through_a_function_body():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_app_and_sampler():
    assert _cycles(GRAPH) == []


def test_app_packages_depend_one_way():
    wrong = []
    for name, deps in GRAPH.items():
        if not name.startswith("app."):
            continue
        own = _package(name)
        for dep in deps:
            if dep.startswith("sampler"):
                allowed = SAMPLER_ALLOWED.get(own, set())
                if allowed is not None and dep not in allowed:
                    wrong.append(f"{name} -> {dep}")
            elif dep != "app" and _package(dep) != own and _package(dep) not in ALLOWED[own]:
                wrong.append(f"{name} -> {dep}")
    assert wrong == []
    # The layering itself has no cycle.
    assert _cycles({k: set(v) for k, v in ALLOWED.items()}) == []


def test_sampler_never_imports_app():
    assert [f"{n} -> {d}" for n, ds in GRAPH.items() if n.startswith("sampler") for d in ds if d.startswith("app")] == []


def test_no_route_imports_the_command_line():
    assert [f"{n} -> {d}" for n, ds in GRAPH.items() if n.startswith("app.web") for d in ds
            if d.startswith("app.cli")] == []


def test_app_top_level_keeps_at_most_six_modules_and_every_package_says_its_rule():
    top = [p.name for p in (ROOT / "app").glob("*.py")]
    assert len(top) <= 6, top
    packages = [p for p in (ROOT / "app").iterdir() if p.is_dir() and any(p.glob("*.py"))]
    assert {p.name for p in packages} >= {"store", "accounts", "studies", "assignment", "statistics", "analysis",
                                           "reporting", "web", "cli"}
    for pkg in packages:
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, pkg.name
        # The architecture document has a paragraph for it.
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for pkg in packages:
        assert f"`app/{pkg.name}/`" in arch, pkg.name


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_architecture_doc_matches_the_allowed_imports(package):
    """docs/architecture.md lists, per package, the same floors below it as this test enforces."""
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    line = next((x for x in arch.splitlines() if x.startswith(f"- `{package}` may import:")), None)
    assert line is not None, package
    listed = {w.strip(" `.") for w in line.split(":", 1)[1].split(",") if w.strip(" `.") and w.strip(" `.") != "nothing"}
    assert listed == ALLOWED[package]
