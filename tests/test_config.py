"""A misspelt config key fails at once and names the closest valid key."""

import pytest

from hkt.config import ConfigError, load_config


def test_unknown_config_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.batchsize'.*batch_size"):
        load_config(None, ["data.batchsize=64"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trainr'.*trainer"):
        load_config(None, ["trainr={max_epochs: 1}"])
    with pytest.raises(ConfigError, match=r"'method\.atention'.*attention"):
        load_config(None, ["parent.arch=resnet20", "method={name: hkt, genes: [avgpool], atention: gated}"])
    with pytest.raises(ConfigError, match="needs a parent"):
        load_config(None, ["method={name: kd}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("method={name: dkd, warmup_unit: step}", "'method.warmup_unit' must be one of 'epochs', 'steps', got 'step'"),
        (
            "method={name: hkt, genes: [avgpool], attention: dot}",
            "'method.attention' must be one of 'gated', 'static', 'learned', 'lepoket'",
        ),
        ("optim.schedule=cosin", "'optim.schedule' must be one of 'cosine', 'step', 'onecycle', 'constant', got 'cosin'"),
        ("optim.milestones=[0.5, half]", "'optim.milestones' must be a list of float, got \\[0.5, 'half'\\]"),
    ],
)
def test_choices_and_lists_are_checked_from_the_type_hints(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["parent.arch=resnet8", override])
