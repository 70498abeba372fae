"""Every Kalman test runs twice: with the compiled loops of ``seqlvm.kalman.native`` and with the
PyTorch code they stand in for, so both answer to the same oracles."""

from typing import Iterator

import pytest

from seqlvm.kalman import native


@pytest.fixture(autouse=True, params=["compiled", "pytorch"])
def loops(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "pytorch":
        with native.disabled():
            yield "pytorch"
    elif not native.available():
        pytest.skip("the compiled loops are not built (tests/test_packaging.py says whether they should be)")
    else:
        yield "compiled"
