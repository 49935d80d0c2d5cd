"""bench/ measures the shipped engine: no engine class or module patched, no private name
imported from another bench module, every module under ~500 lines, and the holding
benchmark's memory probe finds the engine's stores without patching anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(BENCH.glob("*.py"))
MAX_LINES = 500


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _engine_names(tree: ast.Module) -> set[str]:
    """Names bound in this module to an engine module or to something imported from one."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "engine" or alias.name.startswith("engine."):
                    names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "engine" or node.module.startswith("engine.")):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def test_the_bench_modules_exist() -> None:
    assert {"all.py", "launch.py", "common.py"} <= {p.name for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_bench_module_patches_the_engine(path: Path) -> None:
    tree = _tree(path)
    engine = _engine_names(tree)
    patched = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("setattr", "delattr") and node.args):
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for t in targets:
            if isinstance(t, ast.Attribute) and _root_name(t) in engine:
                patched.append(f"line {node.lineno}: {ast.unparse(t)}")
    assert not patched, f"{path.name} patches the engine: {patched}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_name_is_imported_from_another_bench_module(path: Path) -> None:
    private = [f"line {node.lineno}: from {node.module} import {alias.name}"
               for node in ast.walk(_tree(path))
               if isinstance(node, ast.ImportFrom) and node.module
               and node.module.startswith("bench")
               for alias in node.names if alias.name.startswith("_")]
    assert not private, f"{path.name} imports private names: {private}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_bench_module_is_under_500_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines"


def test_the_memory_probe_finds_open_stores_and_their_caches(tmp_path: Path) -> None:
    from bench.engine_probe import diagnose, open_stores
    from engine.store.partition import PartitionStore

    stores = [PartitionStore(tmp_path / f"runs-{p}") for p in range(2)]
    gone = PartitionStore(tmp_path / "closed")
    gone.close()
    try:
        for i, store in enumerate(stores):
            for r in range(3 + i):
                store.remember(f"run-{i}-{r}", {"status": "running", "waiting": {"kind": "task"}})
        found = open_stores()
        assert all(any(s is f for f in found) for s in stores)
        assert not any(f is gone for f in found)

        d = diagnose(stores)
        assert d["stores"] == 2
        assert d["cache"]["runs"] == 7
        assert d["cache"]["limit_per_partition"] == stores[0].cache_runs
        assert [what for what, _mb in d["steps"]] == [
            "after gc + malloc_trim", "after flushing memtables to SST files",
            "after emptying the decoded-state caches"]
        # Giving the caches back is the last step: they are empty afterwards.
        assert all(not s.cache for s in stores)
    finally:
        for s in stores:
            s.close()
