"""Imputation masks (models.md §2.7) and their command-line spec strings."""

from __future__ import annotations

import pytest
import torch

from seqlvm.data import MaskSpec, block_mask, parse_mask_spec, random_mask


def test_random_mask_keeps_the_prefix_and_drops_at_rate_p() -> None:
    mask = random_mask(4000, 20, 0.3, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (4000, 20)
    assert mask[:, :4].all()
    assert abs((~mask[:, 4:]).float().mean().item() - 0.3) < 0.01
    assert random_mask(3, 20, 0.0).all()
    only_prefix = random_mask(3, 20, 1.0, num_observed_prefix=6)
    assert only_prefix[:, :6].all() and not only_prefix[:, 6:].any()


def test_random_mask_is_seeded() -> None:
    a = random_mask(8, 20, 0.5, generator=torch.Generator().manual_seed(3))
    b = random_mask(8, 20, 0.5, generator=torch.Generator().manual_seed(3))
    c = random_mask(8, 20, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_block_mask_is_the_planning_protocol() -> None:
    mask = block_mask(2, 20, 12)  # the training default: frames 4..15 missing
    expected = torch.ones(20, dtype=torch.bool)
    expected[4:16] = False
    assert torch.equal(mask, expected.expand(2, 20))
    assert torch.equal(block_mask(1, 10, 3, start=7)[0], torch.tensor([True] * 7 + [False] * 3))
    with pytest.raises(ValueError, match="fit"):
        block_mask(1, 20, 17)


def test_bad_mask_arguments() -> None:
    with pytest.raises(ValueError, match="p"):
        random_mask(2, 20, 1.5)
    with pytest.raises(ValueError, match="num_observed_prefix"):
        random_mask(2, 20, 0.5, num_observed_prefix=21)
    with pytest.raises(ValueError, match="batch"):
        block_mask(0, 20, 2)
    with pytest.raises(ValueError, match="MaskSpec: kind must be 'random' or 'block'; got 'middle'"):
        MaskSpec("middle")


def test_parse_mask_spec() -> None:
    assert parse_mask_spec("random:0.5") == MaskSpec("random", p=0.5, prefix=4)
    assert parse_mask_spec("random:0.2:2") == MaskSpec("random", p=0.2, prefix=2)
    assert parse_mask_spec("block:4") == MaskSpec("block", k=4, start=4)
    spec = parse_mask_spec("block:4:8")
    assert spec == MaskSpec("block", k=4, start=8)
    assert torch.equal(spec(3, 20), block_mask(3, 20, 4, start=8))
    assert parse_mask_spec(str(spec)) == spec
    g = torch.Generator().manual_seed(1)
    assert torch.equal(parse_mask_spec("random:0.5")(5, 20, generator=g), random_mask(5, 20, 0.5, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("spec", ["random", "random:1.5", "random:x", "block:-1", "block:2:3:4", "middle:4", ""])
def test_bad_mask_specs_name_the_argument(spec: str) -> None:
    with pytest.raises(ValueError, match="mask: got"):
        parse_mask_spec(spec)
