"""Vision transformers and Hugging Face models as parents and children: tiny randomly initialised timm and
transformers configs (no downloads), 3x32x32 inputs. Token genes, CNN <-> ViT pairs, NHWC stages, ModelOutput
logits, the two engines agreeing, export, and the bad inputs of each."""

import logging

import pytest
import torch
from torch import nn

pytest.importorskip("timm")
pytest.importorskip("transformers")

from hkt import HKT, build_model  # noqa: E402
from hkt.core.kinds import FeatureKind, GeneShapeError  # noqa: E402
from hkt.methods import build_method  # noqa: E402

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 3])


def vit(dim: int = 96, patch: int = 4, depth: int = 4) -> nn.Module:
    torch.manual_seed(dim + patch + depth)
    return build_model("timm:vit_tiny_patch16_224", options=dict(img_size=32, patch_size=patch, embed_dim=dim, depth=depth, num_heads=3))


def swin(dim: int) -> nn.Module:
    torch.manual_seed(dim)
    return build_model(
        "timm:swin_tiny_patch4_window7_224", options=dict(img_size=32, window_size=2, embed_dim=dim, depths=(1, 1), num_heads=(3, 3))
    )


def hf_vit(dim: int = 48, layers: int = 2, cls: str = "ViTForImageClassification") -> nn.Module:
    torch.manual_seed(dim + layers)
    return build_model(
        f"hf:{cls}",
        options=dict(
            image_size=32, patch_size=4, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=3, intermediate_size=2 * dim
        ),
    )


def step(method) -> dict[str, float]:
    out, losses = method.forward_train(X, Y)
    total = sum(losses.values())
    total.backward()
    assert out.shape == (4, 10) and torch.isfinite(total)
    grads = [p.grad for p in method.child.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return {k: v.item() for k, v in losses.items()}


def test_vit_to_vit_block_gene_projects_tokens_and_gates_each_token():
    method = HKT(vit(96), vit(192), genes=["blocks.3:blocks.1"], example_input=X[:2])
    inh = method.inheritance
    assert inh.parent_kinds[0] == FeatureKind("tokens", 192, (8, 8), 1)
    assert inh.child_kinds[0] == FeatureKind("tokens", 96, (8, 8), 1)
    assert isinstance(inh.transfers[0].project.linear, nn.Linear) and inh.transfers[0].project.linear.weight.shape == (96, 192)
    assert set(step(method)) == {"child", "inherit", "parent"}
    assert inh.attentions[0].gate.shape == (4, 1, 65)  # one gate per token, class token included


def test_vit_patch_8_parent_to_patch_4_child_resamples_17_tokens_to_65():
    method = HKT(vit(96, patch=4), vit(96, patch=8, depth=2), genes=["blocks.1:blocks.2"], example_input=X[:2])
    transfer = method.inheritance.transfers[0]
    assert transfer.resize.size == (8, 8) and transfer.project is None and transfer.prefix == "match"
    step(method)


def test_cnn_stage_to_vit_block_leaves_the_class_token_native():
    parent = build_model("timm:resnet18")  # layer3 on a 32x32 input: (B, 256, 2, 2)
    method = HKT(vit(96, patch=8, depth=2), parent, genes=["layer3:blocks.1"], example_input=X[:2])
    inh = method.inheritance
    assert inh.parent_kinds[0] == FeatureKind("nchw", 256, (2, 2))
    assert inh.transfers[0].keep == 1 and inh.transfers[0].resize.size == (4, 4)
    step(method)
    # the child's class token passes the gene untouched: the parent has none to give
    q = torch.randn(2, 17, 96)
    mixed = inh.mix(0, q, torch.randn(2, 256, 2, 2))
    assert torch.equal(mixed[:, 0], q[:, 0]) and not torch.equal(mixed[:, 1:], q[:, 1:])


def test_a_mix_that_cannot_reach_a_class_token_head_is_named(caplog):
    """A CNN parent's map mixed only into a ViT's last block changes patch tokens that its class-token head never
    reads: the inherit term would silently repeat the child term."""
    parent = build_model("resnet20")
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method = HKT(vit(48, depth=2), parent, genes=["layer3:blocks.1"], example_input=X[:2])
    assert "does not change the child's output" in caplog.text
    losses = step(method)
    assert losses["inherit"] == pytest.approx(losses["child"], abs=1e-6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hkt"):
        method = HKT(vit(48, depth=2), parent, genes=["layer3:blocks.0"], example_input=X[:2])
    assert "does not change" not in caplog.text
    losses = step(method)
    assert losses["inherit"] != losses["child"]


def test_resnet56_stages_to_vit_blocks_the_grid_recipe_pair():
    method = build_method("hkt", vit(96), build_model("resnet56"), X[:2], genes=["layer2:blocks.1", "layer3:blocks.3"], w_parent=1.0)
    back = method.inheritance.back  # the parent term: the child's tokens back to the parent's layer3 map
    assert back.dst == FeatureKind("nchw", 64, (8, 8)) and back.prefix == "none"
    step(method)


def test_swin_nhwc_stage_is_read_as_nhwc_with_a_real_channel_projection():
    method = HKT(swin(48), swin(96), genes=["layers.0"], example_input=X[:2])
    inh = method.inheritance
    assert inh.parent_kinds[0] == FeatureKind("nhwc", 96, (8, 8)) and inh.child_kinds[0] == FeatureKind("nhwc", 48, (8, 8))
    assert inh.transfers[0].resize is None
    assert sum(p.numel() for p in inh.transfers[0].parameters()) == 96 * 48 + 48
    step(method)
    assert inh.attentions[0].gate.shape == (4, 1, 8, 8)


def test_hugging_face_classifiers_train_with_every_method():
    genes = {
        "fitnet": {"genes": "vit.layers.1"},
        "at": {"genes": ["vit.layers.0", "vit.layers.1"]},
        "reviewkd": {"genes": ["vit.layers.0", "vit.layers.1"]},
        "hkt": {"genes": ["vit.layers.1"], "kd_weight": 1.0},
    }
    for name in ("ce", "kd", "dkd", "dist", "fitnet", "at", "reviewkd", "hkt"):
        method = build_method(name, hf_vit(48, 2), hf_vit(96, 2), X[:2], **genes.get(name, {}))
        step(method)
    exported = method.export_child()
    assert type(exported(X)).__name__ == "ImageClassifierOutput"  # the user's model, as it was built


def test_hugging_face_layers_with_equal_widths_pair_without_an_adapter():
    method = HKT(hf_vit(48, 2), hf_vit(48, 4), genes=["vit.layers.3:vit.layers.1"], example_input=X[:2])
    assert not list(method.inheritance.transfers[0].parameters())
    step(method)


def test_hugging_face_swin_stage_returns_a_tuple_and_gets_its_mix_back_in_it():
    from transformers import SwinConfig, SwinForImageClassification

    def hf_swin(dim):
        torch.manual_seed(dim)
        return SwinForImageClassification(
            SwinConfig(image_size=32, patch_size=2, embed_dim=dim, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=10)
        )

    method = HKT(hf_swin(24), hf_swin(48), genes=["swin.encoder.layers.0"], example_input=X[:2])
    assert method.inheritance.child_kinds[0] == FeatureKind("tokens", 48, (8, 8), 0)  # after the stage's downsample
    step(method)
    with pytest.raises(GeneShapeError, match="layers.0.*tuple of 3.*element 5"):
        HKT(hf_swin(24), hf_swin(48), genes=[{"parent": "swin.encoder.layers.0", "child_element": 5}], example_input=X[:2])


def test_the_separate_engine_equals_the_one_pass_for_a_cnn_to_vit_pair():
    torch.manual_seed(0)
    method = HKT(vit(96), build_model("resnet20"), genes=["layer2:blocks.1", "layer3:blocks.3"], example_input=X[:2], kd_weight=1.0)
    results = []
    for one_pass in (True, False):
        method.zero_grad()
        method.inheritance.one_pass = one_pass
        out, losses = method.forward_train(X, Y)
        sum(losses.values()).backward()
        results.append(({k: v.detach() for k, v in losses.items()}, [p.grad.clone() for p in method.learnable_parameters()]))
    (l1, g1), (l2, g2) = results
    assert set(l1) == {"child", "inherit", "parent", "kd"}
    for k in l1:
        assert torch.allclose(l1[k], l2[k], atol=1e-5, rtol=1e-5), k
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(g1, g2))


def test_tokens_of_a_model_that_says_nothing_about_them_need_a_declared_prefix():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.block, self.head = nn.Conv2d(3, 8, 8, 8), nn.Linear(8, 8), nn.Linear(8, 10)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, 8)
            return self.head(self.block(torch.cat([t.mean(1, keepdim=True), t], 1))[:, 0])

    with pytest.raises(
        GeneShapeError, match="gene 'block' \\(parent \\(2, 17, 8\\), child \\(2, 17, 8\\)\\): parent block 'block'.*parent_prefix_tokens"
    ):
        HKT(Tokens(), Tokens(), genes=["block"], example_input=X[:2])
    method = HKT(Tokens(), Tokens(), genes=[{"parent": "block", "prefix_tokens": 1}], example_input=X[:2])
    assert method.inheritance.child_kinds[0] == FeatureKind("tokens", 8, (4, 4), 1)


def test_an_ambiguous_map_of_an_unknown_layernorm_model_fails_until_declared():
    class ChannelsLast(nn.Module):  # (B, 8, 8, 8) on a 32x32 input: either order is a grid
        def __init__(self):
            super().__init__()
            self.embed, self.norm, self.head = nn.Conv2d(3, 8, 4, 4), nn.LayerNorm(8), nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.norm(self.embed(x).permute(0, 2, 3, 1)).mean((1, 2)))

    with pytest.raises(GeneShapeError, match="'norm'.*ambiguous.*layout"):
        HKT(ChannelsLast(), ChannelsLast(), genes=["norm"], example_input=X[:2])
    method = HKT(ChannelsLast(), ChannelsLast(), genes=[{"parent": "norm", "layout": "nhwc"}], example_input=X[:2])
    assert method.inheritance.child_kinds[0].layout == "nhwc"


def test_a_model_without_logits_fails_at_construction_naming_its_output():
    with pytest.raises(GeneShapeError, match="ViTModel.*BaseModelOutputWithPooling.*last_hidden_state.*output"):
        build_method("kd", hf_vit(48, 1, cls="ViTModel"), hf_vit(48, 2), X[:2])


def test_a_vit_built_for_another_input_size_says_which_option_sizes_it():
    parent, child = build_model("resnet8"), build_model("timm:vit_tiny_patch16_224", options=dict(depth=1, embed_dim=48, num_heads=3))
    with pytest.raises(RuntimeError, match=r"patch_embed.*sized when it is built.*32x32: timm option img_size"):
        build_method("hkt", child, parent, X[:2], genes=["layer3:blocks.0"])


def test_options_that_size_the_head_or_stem_are_refused_not_overwritten():
    with pytest.raises(ValueError, match=r"hf:ViTForImageClassification: options num_labels=5 size what the data sizes \(num_labels=10"):
        build_model("hf:ViTForImageClassification", num_classes=10, options=dict(num_labels=5, hidden_size=48))
    with pytest.raises(ValueError, match=r"timm:vit_tiny_patch16_224: options in_chans=1 .*in_chans=3"):
        build_model("timm:vit_tiny_patch16_224", options=dict(in_chans=1, depth=1))


def test_unknown_hub_names_list_close_ones():
    with pytest.raises(ValueError, match="timm has no model 'vit_tiny_patch16_22'.*vit_tiny_patch16_224"):
        build_model("timm:vit_tiny_patch16_22")
    with pytest.raises(ValueError, match="transformers has no model class 'ViTForImageClasification'.*ViTForImageClassification"):
        build_model("hf:ViTForImageClasification")


def test_vit_children_export_to_onnx_and_pt2_with_parity(tmp_path):
    from hkt.export import TOLERANCE, export

    for name, child, fresh in (("timm", vit(96, depth=2), vit(96, depth=2)), ("hf", hf_vit(48, 2), hf_vit(48, 2))):
        method = build_method(
            "hkt", child, build_model("resnet20"), X[:2], genes=["layer3:" + ("blocks.1" if name == "timm" else "vit.layers.1")]
        )
        report = export(method, fresh, X, tmp_path / name)
        for fmt in ("safetensors", "onnx", "pt2"):
            assert report["formats"][fmt]["ok"], (name, fmt, report["formats"][fmt])
            assert report["formats"][fmt]["max_abs_diff"] <= TOLERANCE[fmt]


def test_dict_outputs_name_their_logits_and_gene_elements_by_key():
    from hkt.core.outputs import read_logits

    class Dicts(nn.Module):  # torchvision-detection-style dicts, at the block and at the model
        def __init__(self, width):
            super().__init__()
            self.stem, self.block, self.head = nn.Conv2d(3, width, 3, 2, 1), nn.Conv2d(width, width, 3, 1, 1), nn.Linear(width, 10)

        def forward(self, x):
            feats = {"aux": torch.zeros(1), "map": torch.relu(self.block(self.stem(x)))}
            return {"features": feats["map"], "out": self.head(feats["map"].mean((2, 3)))}

    class Wrapped(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.body = Dicts(width)

        def forward(self, x):
            return self.body(x)

    child, parent = read_logits(Wrapped(8), "out"), read_logits(Wrapped(16), "out")
    method = HKT(child, parent, genes=[{"parent": "body", "child_element": "features", "parent_element": "features"}], example_input=X[:2])
    assert method.inheritance.child_kinds[0] == FeatureKind("nchw", 8, (16, 16))
    step(method)
    with pytest.raises(GeneShapeError, match="'body'.*dict with keys \\[features, out\\].*'feats'"):
        HKT(Wrapped(8), Wrapped(16), genes=[{"parent": "body", "element": "feats"}], example_input=X[:2])


def test_nhwc_map_to_vit_tokens_goes_through_the_patch_grid():
    from hkt.core.transfer import build_adapter

    x = torch.arange(8.0).reshape(1, 2, 2, 2)  # NHWC (1, H=2, W=2, C=2)
    out = build_adapter(FeatureKind("nhwc", 2, (2, 2)), FeatureKind("tokens", 2, (2, 2), 1))(x)
    assert torch.equal(out, x.reshape(1, 4, 2).transpose(1, 2))  # patch tokens row-major, channels first; cls native
