"""The constructor arguments every game shares (``BatchedEnv._init_common``)."""

import re

import pytest

import commenv

FAMILIES = [commenv.partial_obs_v0, commenv.node_graph_v0, commenv.quiz_v0]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_bad_render_mode_lists_the_valid_choices(family, device):
    choices = [None, *family.metadata["render_modes"]]
    with pytest.raises(ValueError, match=re.escape(f"'video'; valid choices: {choices}")):
        family.batched(render_mode="video", device=device)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("num_envs", [0, 2.0, True])
def test_bad_num_envs(family, num_envs, device):
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        family.batched(num_envs=num_envs, device=device)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_shared_arguments_are_set(family, device):
    game = family.batched(num_envs=3, render_mode="ansi", validate=False, device=device)
    assert (game.num_envs, game.device, game.render_mode, game.validate) == (
        3,
        device,
        "ansi",
        False,
    )
    assert type(game.num_envs) is int


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("validate", ["yes", 1, None])
def test_bad_validate(family, validate, device):
    with pytest.raises(ValueError, match="validate must be True or False"):
        family.batched(validate=validate, device=device)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("device", ["tpu", 3.5, "cuda:99"])
def test_bad_device_names_device(family, device):
    with pytest.raises(ValueError, match="device must be a device this machine has"):
        family.batched(device=device)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_allow_large_is_a_shared_argument(family, device):
    assert family.defaults()["allow_large"] is False
    with pytest.raises(ValueError, match="allow_large must be True or False"):
        family.batched(num_envs=2**20, allow_large="yes", device=device)
