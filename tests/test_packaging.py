"""The distribution maps envs/ and cli/ into the seqlvm namespace and lists every package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _declared() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    on_disk = {"seqlvm." + ".".join(p.parent.relative_to(ROOT / "seqlvm").parts) for p in (ROOT / "seqlvm").rglob("__init__.py")}
    on_disk = {name.rstrip(".") for name in on_disk}
    for top, name in (("envs", "seqlvm.envs"), ("cli", "seqlvm.cli")):
        on_disk |= {name + "".join("." + part for part in p.parent.relative_to(ROOT / top).parts) for p in (ROOT / top).rglob("__init__.py")}
    assert on_disk == _declared()


def test_namespace_mapping_imports() -> None:
    import seqlvm.cli
    import seqlvm.envs

    assert Path(seqlvm.envs.__file__).parent == ROOT / "envs"
    assert Path(seqlvm.cli.__file__).parent == ROOT / "cli"
