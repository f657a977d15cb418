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
