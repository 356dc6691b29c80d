"""Label dropout for classifier-free guidance."""

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.guidance import drop_labels


def test_drop_labels_replaces_the_requested_fraction_with_the_null_label():
    y = torch.arange(10).repeat(2000)
    dropped = drop_labels(y, 0.1, null_label=10, generator=torch.Generator().manual_seed(0))
    is_null = dropped == 10
    assert abs(float(is_null.float().mean()) - 0.1) < 0.01
    assert torch.equal(dropped[~is_null], y[~is_null])


def test_drop_labels_zeroes_text_vectors_and_checks_probability():
    y = torch.ones(1000, 8)
    dropped = drop_labels(y, 0.5, null_label=-1, generator=torch.Generator().manual_seed(0))
    rows_zero = (dropped == 0).all(1)
    assert 400 < int(rows_zero.sum()) < 600 and bool((dropped[~rows_zero] == 1).all())
    assert torch.equal(drop_labels(y, 0.0, -1), y)
    with pytest.raises(DiffkitError, match="p_uncond"):
        drop_labels(y, 1.5, -1)
