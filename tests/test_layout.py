"""The package's import graph, read with ``ast`` (imports inside functions included): no cycle,
and imports point one way, app -> run/bench -> core/replay/envs -> runtime -> config. Imports
under ``if TYPE_CHECKING:`` (annotations only, never run) are not edges."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dqn_cli"

# a module may import its own package's modules and those of lower layers only
LAYER = {"config": 0, "files": 0, "runtime": 1, "core": 2, "replay": 2, "envs": 2, "run": 3, "bench": 3, "app": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the dqn_cli modules it imports (``from pkg import mod`` counts as pkg.mod)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        tree = ast.parse(path.read_text(), str(path))
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
            block.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def area(module: str) -> str | None:
    """The layer key of a module: its subpackage, or config / runtime; None for the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else None


def test_the_import_graph_is_read_correctly():
    graph = import_graph()
    assert "dqn_cli.run.build" in graph["dqn_cli.run.trainer"]  # a module-level import
    assert "dqn_cli.run.video" in graph["dqn_cli.run.phases"]  # an import inside a function
    assert "dqn_cli.run.checkpoint" in graph["dqn_cli.run.phases"]  # `from dqn_cli.run import checkpoint`


def test_there_is_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_point_one_way():
    wrong = []
    for module, imported in import_graph().items():
        here = area(module)
        for other in imported:
            there = area(other)
            if here is None or there is None or there == here:
                continue
            if LAYER[there] >= LAYER[here]:
                wrong.append(f"{module} -> {other}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def sources_containing(pattern: str) -> set[str]:
    """The package's modules whose code (comments and docstrings included) matches ``pattern``."""
    import re

    found = set()
    for path in PACKAGE.rglob("*.py"):
        if re.search(pattern, path.read_text()):
            found.add(module_name(path))
    return found


def test_each_job_has_one_home():
    """What was once done in several places is done in one: YAML from a run dir is read by
    files.read_yaml_data alone (safely: no tags, nothing resolved); the env kind is chosen by
    envs/vector.py's table alone; Gymnasium's vector envs are made in envs/workers.py alone; a rule on
    input is stated once, in config.py (dqn eval's values, `which`, the backends, the replay's size);
    a run's config.yaml is written by the trainer alone (new and resumed runs; dqn eval's by the CLI);
    the CLI calls the resume module once, before Hydra composes (the trainer does the rest)."""
    assert sources_containing(r"yaml\.(safe_)?load\(") == {"dqn_cli.files"}
    assert sources_containing(r'"\.hydra"') == {"dqn_cli.files"}
    assert sources_containing(r"\.kind\s*==\s*\"(atari|minatar|classic)\"") <= {"dqn_cli.config"}
    assert sources_containing(r"(Sync|Async)VectorEnv\(") == {"dqn_cli.envs.workers"}
    for rule in (r"which must be last or best", r"must be one of .* for .* envs", r"episodes must be >= 1"):
        assert sources_containing(rule) == {"dqn_cli.config"}, rule
    assert sources_containing(r"raise \w*Error\([^)]*slots per env") == set()  # storage asserts, config refuses
    writers = {"dqn_cli.run.trainer", "dqn_cli.app.hydra_compat"}  # (the latter: dqn eval's)
    assert sources_containing(r"(atomic_write_text|OmegaConf\.save)\([^\n]*config\.yaml") == writers
    assert sources_containing(r"dqn_cli\.run\.resume import") == {"dqn_cli.app.cli", "dqn_cli.run.trainer"}
    assert len(re.findall(r"from dqn_cli\.run\.resume import", (PACKAGE / "app" / "cli.py").read_text())) == 1
