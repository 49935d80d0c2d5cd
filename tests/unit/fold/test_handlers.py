"""The engine's map holds: one handler per record kind, named after it, and the import
rules docs/architecture.md states (the folds pure, the store below them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.fold import RUNS_HANDLERS, WAITS_HANDLERS
from engine.runtime.batch import RUNS_FOLD, WAITS_FOLD

ENGINE = Path(__file__).resolve().parents[3] / "engine"


@pytest.mark.parametrize("table", [RUNS_HANDLERS, WAITS_HANDLERS])
def test_every_handler_is_named_on_its_record_kind(table: dict) -> None:
    names = {kind.KIND: handler.__name__ for kind, handler in table.items()}
    assert names == {k: "on_" + k.replace(".", "_") for k in names}


def test_the_batch_layer_decodes_exactly_the_kinds_the_handler_tables_take() -> None:
    assert set(RUNS_FOLD.expect) == set(RUNS_HANDLERS)
    assert set(WAITS_FOLD.expect) == set(WAITS_HANDLERS)


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ENGINE / package).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[path.name] = names
    return found


def test_the_folds_import_no_io_and_the_store_never_imports_the_folds() -> None:
    # engine.flow is the gates' pure logic over the same tables (checked below too).
    allowed = ("engine.fold", "engine.flow", "engine.runstate", "engine.expressions",
               "engine.store.keys", "topics")
    for module, names in imports_of("fold").items():
        ours = {n for n in names if n.startswith(("engine", "topics"))}
        bad = {n for n in ours if not n.startswith(allowed)}
        bad -= {"engine.store"}  # ``from engine.store import keys``: the pure key layout
        assert not bad, f"engine/fold/{module} imports {bad}"
        assert not names & {"rocksdict", "confluent_kafka", "time", "random"}, module
    for module, names in imports_of("flow").items():
        ours = {n for n in names if n.startswith(("engine", "topics"))}
        bad = {n for n in ours if not n.startswith(allowed)} - {"engine.store"}
        assert not bad, f"engine/flow/{module} imports {bad}"
        assert not names & {"rocksdict", "confluent_kafka", "time", "random"}, module
    for module, names in imports_of("store").items():
        assert not {n for n in names if n.startswith("engine.fold")}, module
