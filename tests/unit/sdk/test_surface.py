"""The SDK's public surface is ``sdk/__init__.py``: every other module is private, and
everything the README, the docs and the examples tell a user to use is exported there."""

from __future__ import annotations

import re
from pathlib import Path

import sdk

ROOT = Path(__file__).resolve().parents[3]
SDK_DIR = ROOT / "sdk"
# Where a user is told what to import.
USER_FACING = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "examples").glob("*.py")]


def test_every_sdk_module_but_the_package_and_testing_is_private() -> None:
    # sdk.testing is public on purpose, as temporalio.testing is: test code imports it.
    public = sorted(p.name for p in SDK_DIR.glob("*.py")
                    if p.name != "__init__.py" and not p.name.startswith("_"))
    assert public == ["testing.py"]
    assert sdk.testing.__all__ and all(getattr(sdk.testing, n).__doc__
                                       for n in sdk.testing.__all__)


def test_the_surface_is_exported_and_documented() -> None:
    assert sorted(sdk.__all__) == sorted(set(sdk.__all__))
    for name in sdk.__all__:
        obj = getattr(sdk, name)
        assert (obj.__doc__ or "").strip(), f"sdk.{name} has no docstring"
        assert not name.startswith("_"), name


def test_what_users_are_told_to_use_is_public() -> None:
    told: dict[str, set[str]] = {}
    for path in USER_FACING:
        text = path.read_text()
        for name in re.findall(r"\bsdk\.(?!__)([A-Za-z_]\w*)", text):
            told.setdefault(name, set()).add(path.name)
        # Importing a module of the SDK by path ties users to its internals.
        assert not re.search(r"\bfrom sdk\.\w|\bimport sdk\.\w", text), path.name
    assert "BrokerUnreachableError" in told  # the worker's documented start failure
    missing = {name: sorted(where) for name, where in told.items() if name not in sdk.__all__}
    assert missing == {}


def test_the_worker_keeps_its_documented_exit_code() -> None:
    # `stepstream worker` reads it duck-typed (the engine never imports the SDK).
    assert issubclass(sdk.BrokerUnreachableError, ConnectionError)
    assert sdk.BrokerUnreachableError.exit_code == 2


def test_sdk_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in SDK_DIR.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 500} == {}
