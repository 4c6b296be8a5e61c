"""The house rules of docs/architecture.md, checked on the source: data flows one way (no import cycle, no
library module importing a CLI), no task family decided by an env-name string, thin CLIs, short functions
(or a stated reason), and a quiet import (no PyBullet banner)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kai_drive"
CLIS = {"train", "play", "evaluate", "pretrain", "sweep", "bench", "snapshot", "stress", "__main__"}
CLI_MAX_LINES = 150
FUNCTION_MAX_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        name = ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(name: str, f: Path, mods: dict[str, Path]) -> set[str]:
    deps: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            deps.add(node.module)
            deps |= {f"{node.module}.{a.name}" for a in node.names}
    return {d for d in deps if d in mods and d != name}


def _is_cli(name: str) -> bool:
    return name.count(".") == 1 and name.split(".")[1] in CLIS


def test_no_import_cycle_between_modules():
    mods = _modules()
    graph = {n: _imports(n, f, mods) for n, f in mods.items()}
    cycles = []
    for start in graph:  # small graph: a DFS from every node finds every cycle through it
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for d in graph[node]:
                if d == start:
                    cycles.append(" -> ".join(path + [d]))
                elif d not in seen:
                    seen.add(d)
                    stack.append((d, path + [d]))
    # a package and its own submodules importing each other (an __init__ re-exporting) is not a cycle
    # between concepts; anything reaching outside the package is
    cycles = [c for c in cycles if not all(m.startswith(min(c.split(" -> "), key=len)) for m in c.split(" -> "))]
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:10])


def test_library_never_imports_a_cli_module():
    mods = _modules()
    bad = [f"{n} imports {d}" for n, f in mods.items() if not _is_cli(n)
           for d in _imports(n, f, mods) if _is_cli(d)]
    assert not bad, bad


def test_task_family_never_decided_by_an_env_name():
    bad = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant)
                    and node.left.value in ("grasp", "drive", "driving") and isinstance(node.ops[0], ast.In)):
                bad.append(f"{f.relative_to(PKG.parent)}:{node.lineno}")
    assert not bad, "use kai_drive.catalog.task_family(env) instead of a substring test: " + ", ".join(bad)


@pytest.mark.parametrize("cli", sorted(CLIS - {"__main__"}))
def test_cli_modules_are_thin(cli):
    f = PKG / f"{cli}.py"
    if not f.exists():
        pytest.skip(f"no kai_drive/{cli}.py")
    n = len(f.read_text().splitlines())
    assert n <= CLI_MAX_LINES, f"kai_drive/{cli}.py has {n} lines: move the logic into the library"


def test_long_functions_state_their_reason():
    """A function over 60 lines carries a `# long: <reason>` comment on its def line or the line above."""
    bad = []
    for f in PKG.rglob("*.py"):
        lines = f.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                around = " ".join(lines[max(0, first - 2): node.lineno])
                if length > FUNCTION_MAX_LINES and "# long:" not in around:
                    bad.append(f"{f.relative_to(PKG.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not bad, "\n".join(bad)


def test_import_and_make_print_nothing():
    code = ("import gymnasium, kai_drive; env = gymnasium.make('KaiDrive/LaneKeep-v0'); "
            "env.reset(seed=0); env.step(env.action_space.sample()); env.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "", f"stdout not quiet: {out.stdout[:300]!r}"
    assert "pybullet build time" not in out.stderr and "argv[0]" not in out.stderr, out.stderr[:300]


def test_cli_modules_import_without_torch():
    """--help and flag errors stay fast: no CLI module imports torch, SB3 or Ray before it parses its flags
    (a module-level `from kai_drive.training import trainer` once made `sweep --help` take 20 s)."""
    code = ("import sys, importlib\n"
            "for m in ('train', 'sweep', 'evaluate', 'play', 'pretrain', 'bench', 'snapshot', 'stress'):\n"
            "    importlib.import_module('kai_drive.' + m)\n"
            "heavy = sorted(k for k in ('torch', 'stable_baselines3', 'ray') if k in sys.modules)\n"
            "print('heavy:', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout, out.stdout
