"""The distribution maps envs/ and cli/ into the seqlvm namespace and lists every package."""

from __future__ import annotations

import shutil
import sys
import sysconfig
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


def test_the_compiled_loops_are_built_where_there_is_a_compiler() -> None:
    """The C extension is optional, so an install without a C compiler goes on without it; where
    there is one, a missing module means its build failed unnoticed."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here")
    from seqlvm.kalman import native

    assert native._native is not None, "seqlvm.kalman._native was not built: reinstall (make install) and read its build log"
