"""Feature kinds, Transfer between every pair of kinds and per-token Genetic Attention, on tiny tensors whose
expected values are worked out by hand (bilinear weights, row-major patch order, prefix handling)."""

import pytest
import torch
from torch import nn

from hkt.core.genetic_attention import build_attention, gated_attention
from hkt.core.kinds import FeatureKind, GeneShapeError, Hint, infer_kind, model_hint
from hkt.core.transfer import Transfer, build_adapter

GRID_2x2 = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
# bilinear 2 -> 4, align_corners=False: 1-D weights [a0, .75 a0 + .25 a1, .25 a0 + .75 a1, a1], rows then columns
GRID_4x4 = torch.tensor([[0.0, 0.25, 0.75, 1.0], [0.5, 0.75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2.0, 2.25, 2.75, 3.0]])


def tokens(prefix: list[float], grid: torch.Tensor) -> torch.Tensor:
    """One sample, one channel: ``(1, P + h*w, 1)``, prefix tokens first, then the grid row-major."""
    return torch.cat([torch.tensor(prefix), grid.flatten()]).reshape(1, -1, 1)


def test_tokens_to_tokens_resamples_the_patch_grid_bilinearly_and_matches_prefix_tokens():
    src, dst = FeatureKind("tokens", 1, (2, 2), 1), FeatureKind("tokens", 1, (4, 4), 1)
    out = build_adapter(src, dst)(tokens([7.0], GRID_2x2))  # mix form (B, C, N)
    assert out.shape == (1, 1, 17)
    assert out[0, 0, 0] == 7.0  # the class token, projected one to one (here: identity)
    assert torch.allclose(out[0, 0, 1:].reshape(4, 4), GRID_4x4)


def test_tokens_channel_projection_is_a_linear_over_channels_on_every_token():
    src, dst = FeatureKind("tokens", 2, (1, 2), 1), FeatureKind("tokens", 3, (1, 2), 1)
    adapter = build_adapter(src, dst)
    lin = adapter.project.linear
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.0, 0.0, 10.0]))
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])  # (1, 3 tokens, 2 channels)
    want = torch.tensor([[[1.0, 2.0, 13.0], [3.0, 4.0, 17.0], [5.0, 6.0, 21.0]]]).transpose(1, 2)
    assert torch.equal(adapter(x), want)


def test_prefix_tokens_are_pooled_when_the_counts_differ():
    src, dst = FeatureKind("tokens", 1, (1, 1), 2), FeatureKind("tokens", 1, (1, 1), 1)  # DeiT (class + dist) -> ViT
    out = build_adapter(src, dst)(torch.tensor([[[2.0], [4.0], [9.0]]]))
    assert torch.equal(out, torch.tensor([[[3.0, 9.0]]]))


def test_map_to_tokens_flattens_row_major_and_leaves_the_childs_class_token_native():
    src, dst = FeatureKind("nchw", 1, (2, 2)), FeatureKind("tokens", 1, (4, 4), 1)
    adapter = build_adapter(src, dst)
    assert adapter.keep == 1  # a CNN parent has no class token to give
    out = adapter(GRID_2x2.reshape(1, 1, 2, 2))
    assert out.shape == (1, 1, 16) and torch.allclose(out.reshape(4, 4), GRID_4x4)


def test_tokens_to_map_drops_prefix_tokens_and_unflattens_the_grid():
    src, dst = FeatureKind("tokens", 1, (2, 2), 1), FeatureKind("nchw", 1, (2, 2))
    out = build_adapter(src, dst)(tokens([99.0], GRID_2x2))
    assert torch.equal(out, GRID_2x2.reshape(1, 1, 2, 2))


def test_nhwc_and_nchw_are_one_permute_apart():
    x = torch.arange(12.0).reshape(1, 2, 2, 3)  # NHWC, C = 3
    to_nchw = build_adapter(FeatureKind("nhwc", 3, (2, 2)), FeatureKind("nchw", 3, (2, 2)))
    assert torch.equal(to_nchw(x), x.permute(0, 3, 1, 2))
    back = build_adapter(FeatureKind("nchw", 3, (2, 2)), FeatureKind("nhwc", 3, (2, 2)))
    assert torch.equal(back(x.permute(0, 3, 1, 2)), x.permute(0, 3, 1, 2))  # the NHWC mix form is channels first
    assert FeatureKind("nhwc", 3, (2, 2)).from_mix(back(x.permute(0, 3, 1, 2))).equal(x)


def test_learned_adapter_is_the_identity_at_step_zero_for_tokens():
    kind = FeatureKind("tokens", 4, (2, 2), 1)
    adapter = build_adapter(kind, kind, kind="learned")
    assert sum(p.numel() for p in adapter.parameters()) == 4 * 4 + 4
    x = torch.randn(3, 5, 4)
    assert torch.allclose(adapter(x), x.transpose(1, 2))
    assert isinstance(build_adapter(kind, kind), Transfer) and not list(build_adapter(kind, kind).parameters())


def test_vector_pairs_only_with_vector():
    with pytest.raises(GeneShapeError, match="vector"):
        build_adapter(FeatureKind("vector", 8), FeatureKind("tokens", 8, (2, 2), 1))


@pytest.mark.parametrize("attention", ["gated", "static", "learned", "lepoket"])
def test_every_genetic_attention_gates_per_token(attention):
    q, v = torch.randn(2, 6, 5), torch.randn(2, 6, 5)  # (B, C, N): 5 tokens
    ga = build_attention(attention, 6, 3)
    out = ga(q, v)
    assert out.shape == q.shape and ga.gate.shape == (2, 1, 5)
    # one token's result depends on that token's parent feature alone
    v2 = v.clone()
    v2[:, :, 4] += 1.0
    assert torch.allclose(ga(q, v2)[..., :4], out[..., :4], atol=1e-6)


def test_gated_attention_per_token_equals_the_vector_formula_token_by_token():
    q, v = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    out, gate = gated_attention(q, v, 0.6)
    for n in range(5):
        want, want_gate = gated_attention(q[:, :, n], v[:, :, n], 0.6)
        assert torch.allclose(out[:, :, n], want) and torch.allclose(gate[:, :, n], want_gate)


SIZE = (32, 32)


def test_inference_reads_nhwc_from_the_shape_when_only_that_order_is_a_grid():
    # timm Swin's stage on a 32x32 input, (B, 8, 8, 96): as NCHW it would be C=8 on an 8x96 "grid"
    kind = infer_kind(torch.zeros(2, 8, 8, 96), "child", "layers.0", SIZE, Hint(), Hint())
    assert kind == FeatureKind("nhwc", 96, (8, 8))
    assert infer_kind(torch.zeros(2, 96, 8, 8), "child", "layer3", SIZE, Hint(), Hint()) == FeatureKind("nchw", 96, (8, 8))


def test_an_ambiguous_map_is_never_silently_nchw():
    t = torch.zeros(2, 8, 8, 8)
    with pytest.raises(GeneShapeError, match="'stage1'.*ambiguous.*child_layout"):
        infer_kind(t, "child", "stage1", SIZE, Hint(), Hint())
    assert infer_kind(t, "child", "stage1", SIZE, Hint("nhwc"), Hint()).layout == "nhwc"  # declared
    assert infer_kind(t, "child", "stage1", SIZE, Hint(), Hint("nhwc")).layout == "nhwc"  # the model's convention
    with pytest.raises(GeneShapeError, match="declared layout nhwc"):
        infer_kind(torch.zeros(2, 96, 8, 8), "child", "layer3", SIZE, Hint("nhwc"), Hint())


def test_tokens_need_a_known_prefix_count():
    t = torch.zeros(2, 17, 32)
    with pytest.raises(GeneShapeError, match="prefix.*child_prefix_tokens"):
        infer_kind(t, "child", "blocks.0", SIZE, Hint(), Hint())
    assert infer_kind(t, "child", "blocks.0", SIZE, Hint(prefix_tokens=1), Hint()) == FeatureKind("tokens", 32, (4, 4), 1)
    with pytest.raises(GeneShapeError, match="no patch grid"):
        infer_kind(torch.zeros(2, 18, 32), "child", "blocks.0", SIZE, Hint(prefix_tokens=1), Hint())


def test_model_hints_come_from_timm_and_hugging_face_metadata_and_conventions():
    assert model_hint(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))).layout == "nchw"  # no LayerNorm
    assert model_hint(nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8))).layout is None  # unknown: must be declared
    vit = nn.Module()
    vit.num_prefix_tokens, vit.output_fmt = 1, "NHWC"
    assert model_hint(vit) == Hint("nhwc", 1)


def test_a_1x1_map_and_a_vector_pair_both_ways():
    """The paper's pooled gene between a network that pools to (B, C, 1, 1) (timm MobileNetV3's global_pool) and one
    that pools to (B, C) (a ResNet's avgpool + flatten)."""
    from hkt.core.kinds import FeatureKind
    from hkt.core.transfer import build_adapter

    x_map, x_vec = torch.randn(3, 8, 1, 1), torch.randn(3, 8)
    to_vec = build_adapter(FeatureKind("nchw", 8, (1, 1)), FeatureKind("vector", 16))
    assert to_vec(x_map).shape == (3, 16)
    to_map = build_adapter(FeatureKind("vector", 8), FeatureKind("nchw", 16, (1, 1)))
    assert to_map(x_vec).shape == (3, 16, 1, 1)
    same = build_adapter(FeatureKind("nhwc", 8, (1, 1)), FeatureKind("vector", 8))  # equal channels: a squeeze only
    torch.testing.assert_close(same(x_map.permute(0, 2, 3, 1)), x_map.flatten(1))
    with pytest.raises(GeneShapeError, match="pairs with a vector or a 1x1 map"):
        build_adapter(FeatureKind("nchw", 8, (2, 2)), FeatureKind("vector", 8), gene="layer3:avgpool")


def test_global_pool_gene_between_a_timm_resnet_and_a_timm_mobilenetv3():
    pytest.importorskip("timm")
    from hkt import build_method, build_model

    parent, child = build_model("timm:resnet18"), build_model("timm:mobilenetv3_small_050")  # (B, 512) and (B, 576, 1, 1)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    method = build_method("hkt", child, parent, x, genes=["global_pool"])
    out, losses = method.forward_train(x, y)
    assert out.shape == (2, 10) and set(losses) == {"child", "inherit", "parent"}
    sum(losses.values()).backward()


def test_a_dry_run_failure_keeps_the_users_traceback_as_its_cause():
    from hkt.core.extract import DryRunError
    from hkt.methods import build_method

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 3)

        def forward(self, x):
            raise KeyError("the user's bug")

    with pytest.raises(DryRunError, match="failed its dry run") as err:
        build_method("hkt", Broken(), nn.Sequential(nn.Linear(4, 3)), torch.randn(2, 4), genes=["0:body"])
    assert isinstance(err.value.__cause__, KeyError)
