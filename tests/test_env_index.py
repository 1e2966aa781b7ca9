"""The per-world reset selector every batched face shares (``commenv.core.check_env_index``)."""

import numpy as np
import pytest
import torch

from commenv.core import check_env_index


@pytest.mark.parametrize(
    ("env_index", "expected"),
    [
        (1, [False, True, False, False]),
        (np.int64(3), [False, False, False, True]),
        ([0, 3, 3], [True, False, False, True]),
        (torch.tensor([2]), [False, False, True, False]),
        (np.array([True, False, False, True]), [True, False, False, True]),
        (torch.zeros(4, dtype=torch.bool), [False] * 4),
    ],
)
def test_env_index_forms_become_one_mask(env_index, expected):
    mask = check_env_index(env_index, 4)
    assert mask.dtype == torch.bool and mask.tolist() == expected


@pytest.mark.parametrize(
    "env_index", [4, -1, True, [], [0.5], "a", torch.zeros(3, dtype=torch.bool), [[0]], None]
)
def test_bad_env_index_names_what_arrived(env_index):
    with pytest.raises(ValueError, match=r"env_index must be an int in \[0, 3\]"):
        check_env_index(env_index, 4)
