"""Config validation: a misspelt key names the closest valid one; numbers, choices and lists are checked from the
type hints before anything runs."""

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


def test_scientific_notation_is_a_number_and_types_are_checked(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-3\n  weight_decay: 5E-4\ntrainer:\n  max_epochs: 2\n")
    cfg = load_config(tmp_path / "c.yaml", ["optim.min_lr=1e-5"])
    assert cfg["optim"]["lr"] == 0.001 and cfg["optim"]["weight_decay"] == 0.0005 and cfg["optim"]["min_lr"] == 1e-5
    with pytest.raises(ConfigError, match=r"'optim\.lr' must be float, got '1e-3' \(str\)"):
        load_config(None, ["optim.lr='1e-3'"])
    with pytest.raises(ConfigError, match=r"'trainer\.max_epochs' must be .*int.*got 2\.5"):
        load_config(None, ["trainer.max_epochs=2.5"])
    with pytest.raises(ConfigError, match=r"'method\.temperature' must be float \| None, got 'hot'"):
        load_config(None, ["parent.arch=resnet8", "method={name: kd, temperature: hot}"])
