"""The sampler's import graph has no cycles (any import counts: TYPE_CHECKING or inside a
function too), so every module can be read, tested and moved on its own."""

from __future__ import annotations

import ast
from pathlib import Path

SAMPLER = Path(__file__).resolve().parents[1] / "sampler"


def _graph() -> dict[str, set[str]]:
    names = {p.stem for p in SAMPLER.glob("*.py")}
    graph = {}
    for name in names:
        deps = set()
        for node in ast.walk(ast.parse((SAMPLER / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sampler":
                parts = node.module.split(".")
                deps |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sampler.")}
        graph[name] = deps & names - {name}
    return graph


def test_the_sampler_import_graph_has_no_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(f"sampler.{m}" for m in cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_generation_settings_is_still_importable_from_generate():
    from sampler import generate, settings

    assert generate.GenerationSettings is settings.GenerationSettings
