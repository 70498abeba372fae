"""``seqlvm generate`` and ``seqlvm show`` through typer's CliRunner."""

from __future__ import annotations

import h5py
import pytest
from PIL import Image
from typer.testing import CliRunner

from seqlvm.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def box_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "box.h5"
    result = runner.invoke(app, ["generate", "seqlvm/BouncingBall-v0", "--episodes", "3", "--steps", "6", "--seed", "1234", "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_generate_writes_the_file(box_file) -> None:
    with h5py.File(box_file, "r") as f:
        assert f["observations"].shape == (3, 6, 32, 32, 1)
        assert f.attrs["seed"] == 1234 and f.attrs["env_id"] == "seqlvm/BouncingBall-v0"


def test_generate_with_workers_and_kwargs(tmp_path) -> None:
    out = tmp_path / "nav.h5"
    result = runner.invoke(
        app,
        ["generate", "seqlvm/ImageNavigation-v0", "-n", "4", "-T", "5", "-o", str(out), "-j", "2", "--env-kwargs", '{"crop": 4}'],
    )
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert f["observations"].shape == (4, 5, 4, 4, 3) and f["actions"].shape == (4, 5, 5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["seqlvm/Nope-v0"], "env_id: unknown environment 'seqlvm/Nope-v0'"),
        (["seqlvm/BouncingBall-v0", "--episodes", "0"], "--episodes: got 0"),
        (["seqlvm/BouncingBall-v0", "--workers", "0"], "--workers: got 0"),
        (["seqlvm/BouncingBall-v0", "--env-kwargs", "{oops"], "--env-kwargs: got '{oops', not valid JSON"),
        (["seqlvm/BouncingBall-v0", "--env-kwargs", '{"scene": "cube"}'], "scene: unknown name 'cube'"),
        (["seqlvm/BouncingBall-v0", "--policy", "smart"], "policy: got 'smart'"),
    ],
)
def test_generate_errors_are_one_line_and_exit_2(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "x.h5"
    base = ["generate", *args] + (["--episodes", "2"] if "--episodes" not in args else [])
    result = runner.invoke(app, [*base, "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and message in result.output
    assert not out.exists()


def test_generate_refuses_to_overwrite_without_force(box_file) -> None:
    args = ["generate", "seqlvm/BouncingBall-v0", "-n", "1", "-T", "2", "-o", str(box_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--force" in result.output
    result = runner.invoke(app, ["generate", "seqlvm/BouncingBall-v0", "-n", "1", "-T", "2", "-o", str(box_file.with_suffix(".txt"))])
    assert result.exit_code == 2 and "--out" in result.output


def test_show_gif_and_png(box_file, tmp_path) -> None:
    gif = tmp_path / "ep.gif"
    result = runner.invoke(app, ["show", str(box_file), "--episode", "0", "--episode", "2", "--out", str(gif), "--scale", "2"])
    assert result.exit_code == 0, result.output
    with Image.open(gif) as img:
        assert img.n_frames == 6 and img.size == (2 * 32 * 2 + 2, 64)  # two episodes side by side, 1-px gap ×2
    png = tmp_path / "grid.png"
    result = runner.invoke(app, ["show", str(box_file), "-e", "1", "-e", "2", "-o", str(png), "--scale", "1"])
    assert result.exit_code == 0, result.output
    with Image.open(png) as img:
        assert img.size == (6 * 33 + 1, 2 * 33 + 1)  # episodes × time with 1-px padding


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.h5", "-o", "x.gif"], "no such file"),
        (["{box}", "-e", "3", "-o", "x.gif"], "--episode: got [3]"),
        (["{box}", "-o", "x.mp4"], "--out: got"),
        (["{box}", "-o", "x.gif", "--fps", "0"], "--fps: got 0"),
    ],
)
def test_show_errors(box_file, tmp_path, args: list[str], message: str) -> None:
    args = [a.replace("{box}", str(box_file)) if "{box}" in a else a for a in args]
    args = [str(tmp_path / a) if a.endswith((".gif", ".mp4", ".h5")) and "/" not in a else a for a in args]
    result = runner.invoke(app, ["show", *args])
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
