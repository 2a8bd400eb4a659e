"""Structure: each block toggle changes exactly the layers it should, and toggles compose freely."""

from __future__ import annotations

import pytest
import torch

from workbench.arch.blocks import MobileViTBlock
from workbench.arch.model import MobileViT, count_params, create_model
from workbench.arch.presets import get_preset
from workbench.arch.spec import BlockOptions, ResolvedStage

VIT_BLOCKS = ("layer3.1", "layer4.1", "layer5.1")


def shapes(spec) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in MobileViT(spec).state_dict().items()}


def diff(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_fusion_conv_3x3_to_1x1_changes_only_the_fusion_kernels():
    base = get_preset("v1-s")
    a, b = shapes(base), shapes(base.with_overrides({"block.fusion_conv": "1x1"}))
    assert diff(a, b) == {f"{blk}.fusion.conv.weight" for blk in VIT_BLOCKS}
    for blk in VIT_BLOCKS:
        assert a[f"{blk}.fusion.conv.weight"][2:] == (3, 3) and b[f"{blk}.fusion.conv.weight"][2:] == (1, 1)


def test_fusion_input_local_changes_only_the_fusion_input_width():
    base = get_preset("v1-s").with_overrides({"block.fusion_conv": "1x1"})
    a, b = shapes(base), shapes(base.with_overrides({"block.fusion_input": "local"}))
    assert diff(a, b) == {f"{blk}.fusion.conv.weight" for blk in VIT_BLOCKS}
    for blk, st in zip(VIT_BLOCKS, base.resolve().stages[2:]):
        assert a[f"{blk}.fusion.conv.weight"][1] == 2 * st.channels  # cat(input C, projection C)
        assert b[f"{blk}.fusion.conv.weight"][1] == st.attn_dim + st.channels  # cat(local d, projection C)


def test_depthwise_local_changes_only_the_local_3x3():
    base = get_preset("v1-s")
    a, b = shapes(base), shapes(base.with_overrides({"block.local_conv": "depthwise"}))
    assert diff(a, b) == {f"{blk}.local_conv.conv.weight" for blk in VIT_BLOCKS}
    for blk in VIT_BLOCKS:
        assert b[f"{blk}.local_conv.conv.weight"][1] == 1


def test_attention_toggle_changes_only_the_global_representation():
    base = get_preset("v1-s")
    a, b = shapes(base), shapes(base.with_overrides({"block.attention": "linear"}))
    changed = diff(a, b)
    assert changed and all(".global_rep." in k for k in changed)
    assert any("attn.qkv.weight" in k and len(b.get(k, ())) == 4 for k in changed)  # 1x1 conv d -> 1+2d


def _block(opt: BlockOptions) -> MobileViTBlock:
    stage = ResolvedStage("layer3", "vit", 16, 16, 1, 2, 2.0, attn_dim=8, ffn_dim=16, heads=2, patch=2)
    return MobileViTBlock(stage, opt).eval()


def test_input_add_adds_exactly_the_block_input_and_no_weights():
    torch.manual_seed(0)
    plain = _block(BlockOptions(fusion_conv="1x1", fusion_input="local"))
    added = _block(BlockOptions(fusion_conv="1x1", fusion_input="local", input_add=True))
    assert plain.state_dict().keys() == added.state_dict().keys()
    added.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(added(x), plain(x) + x)


def test_table6_chain_on_v1s_ends_at_v3_s_unscaled():
    chain = [{"block.fusion_conv": "1x1"}, {"block.fusion_input": "local"}, {"block.input_add": "true"},
             {"block.local_conv": "depthwise"}]
    spec = get_preset("v1-s")
    params = [count_params(MobileViT(spec))[0]]
    for step in chain:
        spec = spec.with_overrides(step)
        params.append(count_params(MobileViT(spec))[0])
    target = get_preset("v3-s-unscaled")
    assert spec.architecture() == target.architecture()
    assert params[0] == 5578632 and params[-1] == 4327688
    assert params[2] == params[1] - sum(  # local concat: in-channels 2C -> d + C on a 1x1 kernel
        (st.channels - st.attn_dim) * st.channels for st in spec.resolve().stages[2:])
    assert params[3] == params[2]  # input-add has no weights


def test_toggles_compose_in_any_order():
    steps = [("block.local_conv", "depthwise"), ("block.input_add", "true"), ("block.fusion_input", "local"),
             ("block.fusion_conv", "1x1")]
    spec = get_preset("v1-s")
    for key, value in steps:
        spec = spec.with_overrides({key: value})
        MobileViT(spec)  # every intermediate combination builds
    assert spec.architecture() == get_preset("v3-s-unscaled").architecture()


def test_v2_based_v3_fuses_without_projection():
    blk = create_model("v3-0.5").layer3[1]
    st = get_preset("v3-0.5").resolve().stages[2]
    assert blk.projection is None
    assert blk.fusion.conv.weight.shape[1] == 2 * st.attn_dim and not hasattr(blk.fusion, "act")


def tiny(name: str = "v3-xxs", **extra):
    overrides = {"width": "0.5", "layer3.attn_width": "0.5", "layer4.attn_width": "0.5",
                 "layer5.attn_width": "0.5", "layer4.depth": "1", "num_classes": "10", **extra}
    return create_model(name, overrides)


def test_sdpa_and_explicit_matmul_attention_are_numerically_equal():
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model.set_attention_impl("sdpa")(x)
        b = model.set_attention_impl("matmul")(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["v1-xxs", "v2-0.5", "v3-xxs", "v3-0.5"])
@pytest.mark.parametrize("resolution", [32, 48, 64])
def test_small_inputs_train(name, resolution):
    torch.manual_seed(0)
    model = tiny(name).train()
    x, y = torch.randn(4, 3, resolution, resolution), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_stem_stride_one_keeps_more_resolution():
    spec = get_preset("v3-xxs").with_overrides({"stem.stride": "1"})
    assert spec.resolve().total_stride == 16
    assert create_model(spec).forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 2
