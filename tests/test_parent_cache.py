"""The parent cache: a warm run equals an uncached run bit for bit, any change of parent, genes or batch misses, a
corrupt shard is named and recomputed, and a cache that cannot serve the run fails before training."""

import json
import logging

import pytest
import torch

from hkt.config import ConfigError, load_config
from hkt.models import build_model
from hkt.parent_cache import ParentCache, ParentCacheError
from hkt.training.run import fit

PARENT = ["parent.arch=resnet8", "parent.width=8", "trainer.max_epochs=2"]
METHODS = {
    "kd": ["method={name: kd}"],
    "fitnet": ["method={name: fitnet, genes: ['layer2:layer2']}"],
    "at": ["method={name: at, genes: [layer1, layer2, layer3]}"],
    "hkt_pooled": ["method={name: hkt, genes: [avgpool]}"],
    "hkt_stages_kd": ["method={name: hkt, genes: [layer1, layer2, layer3], kd_weight: 1}"],
}


def run(overrides, out, cache=None):
    extra = [f"parent_cache={{dir: {cache}}}"] if cache else []
    record = fit(load_config(None, overrides + PARENT + extra + [f"out_dir={out}"]))
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return record, state


def same_run(a, b):
    (ra, sa), (rb, sb) = a, b
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), "weights differ"
    assert ra["epochs"] == rb["epochs"] and ra["val_acc_best"] == rb["val_acc_best"] and ra["test_acc"] == rb["test_acc"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_warm_cache_gives_the_uncached_run_bit_for_bit(tiny_fashion, tmp_path, method):
    overrides = tiny_fashion + METHODS[method]
    plain = run(overrides, tmp_path / "plain")
    cold = run(overrides, tmp_path / "cold", tmp_path / "cache")
    warm = run(overrides, tmp_path / "warm", tmp_path / "cache")
    same_run(plain, cold)
    same_run(plain, warm)
    steps = 2 * 8  # 512 images / 64, two epochs
    assert cold[0]["parent_cache"]["hits"] == 0 and cold[0]["parent_cache"]["misses"] == steps
    assert warm[0]["parent_cache"]["hits"] == steps and warm[0]["parent_cache"]["misses"] == 0
    assert warm[0]["parent_cache"]["written_mb"] == 0 and cold[0]["parent_cache"]["size_mb"] > 0
    other_seed = run(overrides + ["seed=1"], tmp_path / "seed1", tmp_path / "cache")[0]["parent_cache"]
    assert other_seed["hits"] == 0, "another seed feeds other batches: every step misses"


def test_another_parent_or_precision_uses_another_directory(tmp_path):
    parent = build_model("resnet8", 10, 1, 8)
    base = ParentCache(tmp_path, parent).dir
    assert ParentCache(tmp_path, parent, ["layer3"]).dir == base, "genes live inside the shards, not in the key"
    assert ParentCache(tmp_path, parent, fp16=True).dir != base
    with torch.no_grad():
        parent.linear.bias[0] += 1e-6
    assert ParentCache(tmp_path, parent).dir != base
    parent = build_model("resnet8", 10, 1, 8).to(memory_format=torch.channels_last)
    assert ParentCache(tmp_path, parent).dir != ParentCache(tmp_path, build_model("resnet8", 10, 1, 8)).dir


def test_a_batch_differing_in_one_value_or_a_gene_the_shard_lacks_misses(tmp_path):
    parent = build_model("resnet8", 10, 1, 8).eval()
    cache = ParentCache(tmp_path, parent)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        out = parent(x)
    cache.put(x, out, {"layer2": out[:, :2]}, seconds=0.5)
    got, feats = cache.get(x.clone(), ["layer2"])
    assert torch.equal(got, out) and feats.keys() == {"layer2"} and torch.equal(feats["layer2"], out[:, :2])
    assert cache.get(x, ["layer3"]) is None and cache.partial == 1, "a gene the shard lacks is a miss"
    y = x.clone()
    y[3, 0, 27, 27] += 1e-7
    assert cache.get(y) is None and cache.get(x[:3]) is None
    assert cache.get(x.to(memory_format=torch.channels_last)) is None  # another layout can sum in another order
    assert cache.hits == 1 and 0 < cache.saved_s < 0.5 and cache.compute_s == 0.5


def test_a_grid_stores_every_gene_its_methods_read_so_later_methods_hit(tiny_fashion, tmp_path):
    """kd's run stores layer2 too (``store``): a later fitnet run on the same stream never runs the parent, and equals
    its uncached run bit for bit."""
    cache = f"parent_cache={{dir: {tmp_path / 'cache'}, store: [layer2, avgpool]}}"
    first = fit(load_config(None, tiny_fashion + METHODS["kd"] + PARENT + [cache, f"out_dir={tmp_path / 'kd'}"]))
    assert first["parent_cache"]["misses"] == 16 and first["parent_cache"]["compute_s"] > 0
    for method in ("fitnet", "hkt_pooled"):
        plain = run(tiny_fashion + METHODS[method], tmp_path / f"{method}_plain")
        later = run(tiny_fashion + METHODS[method] + [cache], tmp_path / method)
        same_run(plain, later)
        assert later[0]["parent_cache"]["hits"] == 16 and later[0]["parent_cache"]["misses"] == 0
        assert later[0]["parent_cache"]["compute_s"] == 0 and later[0]["parent_cache"]["saved_s"] > 0
        assert later[0]["trainable_params"] > later[0]["child_params"], "the regressor / adapter trains, is not deployed"
    assert first["trainable_params"] == first["child_params"]


def test_fp16_storage_states_its_error_and_cached_runs_agree(tiny_fashion, tmp_path, caplog):
    overrides = tiny_fashion + METHODS["fitnet"] + [f"parent_cache={{dir: {tmp_path / 'cache'}, fp16: true}}"]
    with caplog.at_level(logging.INFO, logger="hkt"):
        cold = run(overrides, tmp_path / "cold")
    stated = [r.getMessage() for r in caplog.records if "largest relative rounding error" in r.getMessage()]
    assert len(stated) == 1 and 0 < cold[0]["parent_cache"]["fp16_max_relative_error"] <= 2.0**-11
    warm = run(overrides, tmp_path / "warm")
    same_run(cold, warm)  # both read the rounded values
    assert warm[0]["parent_cache"]["hits"] == 16
    plain = run(tiny_fashion + METHODS["fitnet"], tmp_path / "plain")
    assert any(not torch.equal(v, warm[1][k]) for k, v in plain[1].items()), "fp16 is not exact: the weights differ"
    half = sorted((tmp_path / "cache").rglob("*.safetensors"))[0].stat().st_size
    fp32 = fit(
        load_config(
            None,
            tiny_fashion
            + METHODS["fitnet"]
            + PARENT
            + ["trainer.max_epochs=1", f"out_dir={tmp_path / 'f32'}", f"parent_cache={{dir: {tmp_path / 'c32'}}}"],
        )
    )
    assert fp32["parent_cache"]["written_mb"] / 8 > 1.9 * half / 2**20, "float16 shards take about half"


def test_a_corrupt_shard_is_named_and_recomputed(tiny_fashion, tmp_path, caplog):
    overrides = tiny_fashion + METHODS["kd"]
    plain = run(overrides, tmp_path / "plain", tmp_path / "cache")
    shards = sorted((tmp_path / "cache").rglob("*.safetensors"))
    shards[0].write_bytes(shards[0].read_bytes()[:50])  # truncated
    shards[1].write_bytes(b"\0" * shards[1].stat().st_size)  # garbage
    with caplog.at_level(logging.WARNING, logger="hkt"):
        again = run(overrides, tmp_path / "again", tmp_path / "cache")
    named = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(named) == 2 and {str(shards[0]), str(shards[1])} == {m.split(" cannot")[0].split(": ", 1)[1] for m in named}
    same_run(plain, again)
    assert again[0]["parent_cache"]["misses"] == 2 and again[0]["parent_cache"]["hits"] == 14


def test_a_cache_that_cannot_serve_the_run_fails_before_training(tiny_fashion, tmp_path):
    overrides = tiny_fashion + METHODS["fitnet"] + PARENT + [f"out_dir={tmp_path / 'run'}"]
    with pytest.raises(
        ParentCacheError, match=r"read_only: .* holds no values for this parent \(CifarResNet, weights .*storage as computed\)"
    ):
        fit(load_config(None, overrides + [f"parent_cache={{dir: {tmp_path / 'empty'}, read_only: true}}"]))
    run(tiny_fashion + METHODS["fitnet"] + ["trainer.max_epochs=1", "data.batch_size=32"], tmp_path / "filled", tmp_path / "filled_cache")
    with pytest.raises(ParentCacheError, match=r"holds this parent but not the first training batch .* another data stream"):
        fit(load_config(None, overrides + [f"parent_cache={{dir: {tmp_path / 'filled_cache'}, read_only: true}}"]))
    with pytest.raises(
        ParentCacheError, match=r"may add 0\.\d\d GB \(16 batches x .* MB .*genes \['layer2', 'layer3'\].*past parent_cache\.max_gb = 1e-05"
    ):
        fit(load_config(None, overrides + [f"parent_cache={{dir: {tmp_path / 'c'}, max_gb: 0.00001, store: [layer3]}}"]))
    assert not (tmp_path / "run" / "checkpoints").exists(), "nothing trained"
    for bad, message in [
        ("{max_gb: 3}", "mapping with a dir"),
        ("{dir: c, max_gbs: 3}", "Did you mean max_gb"),
        ("{dir: c, max_gb: -1}", "positive number of GB"),
        ("{dir: c, read_only: 1}", "true or false"),
        ("{dir: c, fp16: yes please}", "fp16 must be true or false"),
        ("{dir: c, store: layer2}", "list of parent genes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides + [f"parent_cache={bad}"])


def test_hkt_replays_the_parent_up_to_its_last_gene_and_only_where_that_is_exact(tiny_fashion, tmp_path, caplog):
    from hkt.core.gene import parse_genes
    from hkt.replay import plan_replay

    parent = build_model("resnet8", 10, 1, 8).eval()
    x = torch.randn(2, 1, 28, 28)
    plan = plan_replay(parent, parse_genes(["layer2"]), x)
    assert plan.modules == ["conv1", "bn1", "layer1", "layer2"] and set(plan.placeholders) == {"conv1", "bn1", "layer1"}
    assert "not top-level" in plan_replay(parent, parse_genes(["layer2.0"]), x)
    with caplog.at_level(logging.INFO, logger="hkt"):  # a gene inside a stage: HKT runs its own parent pass, and says so
        record = fit(
            load_config(
                None,
                tiny_fashion
                + PARENT
                + ["method={name: hkt, genes: ['layer3.0:layer3']}", "trainer.max_epochs=1", f"parent_cache={{dir: {tmp_path / 'c'}}}"],
            )
        )
    assert "parent_cache" not in record
    assert any("not used for method hkt: parent gene(s) ['layer3.0'] are not top-level" in r.getMessage() for r in caplog.records)
    assert json.dumps(record, default=str)
