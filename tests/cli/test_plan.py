"""``seqlvm plan``: MPC episodes with a tiny checkpoint, every planner, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.cli.helpers import assert_user_error, invoke
from tests.rl.conftest import save_model, tiny_gtmsm, tiny_kvae

SMALL = ("--episodes", 2, "--context", 3, "--horizon", 3, "--population", 6, "--elites", 2, "--iterations", 1)


@pytest.fixture(scope="module")
def ball_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tiny_kvae((1, 32, 32), 2), tmp_path_factory.mktemp("ckpt") / "ball.pt")


@pytest.mark.parametrize("planner, extra", [
    ("cem", []), ("cem", ["--noise", "--particles", 2]), ("shooting", []), ("true", []), ("random", []),
])
def test_plan_prints_success_and_timing_and_writes_a_gif(planner, extra, ball_checkpoint, tmp_path):
    out = tmp_path / "plan.gif"
    result = invoke("plan", ball_checkpoint, "--task", "hold", "--planner", planner, "--out", out, *SMALL, *extra)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "success rate" in result.stdout and "planning ms per step" in result.stdout
    with Image.open(out) as gif:
        assert gif.n_frames == 3 + 30  # the context, then the hold task's budget
        assert gif.size[0] > gif.size[1]  # two episodes side by side


def test_plan_goto_with_a_gtmsm_on_no_bump_walks(tmp_path):
    checkpoint = save_model(tiny_gtmsm(), tmp_path / "gtmsm.pt")
    out = tmp_path / "goto.gif"
    result = invoke("plan", checkpoint, "--task", "goto", "--env-kwargs", '{"exploration_blocked": "stay"}',
                    "--out", out, *SMALL[:2], "--context", 12, *SMALL[4:])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "success rate" in result.stdout and out.is_file()


def test_plan_errors_are_one_line(ball_checkpoint, tmp_path):
    gif = tmp_path / "p.gif"
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--out", tmp_path / "p.png"), "--out: the episodes are written as .gif")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "fly", "--out", gif), "task: unknown name 'fly'")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--planner", "magic", "--out", gif), "planner: unknown name 'magic'")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "goto", "--out", gif), "need obs_shape = (3, 8, 8)")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--episodes", 0, "--out", gif), "--episodes and --context")
    assert_user_error(invoke("plan", tmp_path / "none.pt", "--task", "hold", "--out", gif), "no such file")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--horizon", 0, "--out", gif), "horizon must be an int >= 1")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--particles", 3, "--out", gif), "num_particles: got 3 without noise")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--env-kwargs", "[1]", "--out", gif), "--env-kwargs: got '[1]'; expected a JSON object")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--env", "Nope-v0", "--out", gif), "--env: unknown environment 'Nope-v0'")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--env", "seqlvm/Pong-v0", "--out", gif),
                      "--env: the HoldTask is posed in 'seqlvm/BouncingBall-v0'; got 'seqlvm/Pong-v0'")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--seed", -1, "--out", gif), "--seed: got -1; expected an integer")
    (tmp_path / "file").write_text("")
    assert_user_error(invoke("plan", ball_checkpoint, "--task", "hold", "--out", tmp_path / "file" / "p.gif"), "which is a file, not a directory")
    assert not gif.exists()
