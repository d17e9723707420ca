"""Checkpoint reading/loading rules and the named weights choices."""
import logging
from pathlib import Path

import pytest
import torch

from feature_extraction.backbones import build_model, tada2d_r50, tadaconvnext_tiny
from feature_extraction.weights import (
    KIND_TADACONV,
    WEIGHTS,
    Preprocessing,
    get_weights_spec,
    load_checkpoint,
    read_checkpoint,
)

DATA = Path(__file__).parent / "data" / "tadaconv"
W8 = DATA / "tada2d_r50_w8_seed21.pyth"
IO = DATA / "tada2d_r50_w8_seed21.io.pt"


@pytest.fixture(scope="module")
def official():
    return torch.load(W8, weights_only=True)


def pooled_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.load(IO, weights_only=True)["input"])


def test_width_and_head_are_read_from_the_checkpoint():
    checkpoint = read_checkpoint(W8)
    assert checkpoint.kind == KIND_TADACONV and checkpoint.num_classes == 10
    model = tada2d_r50(weights=W8)
    assert model.backbone.base_width == 8 and model.head is None
    torch.testing.assert_close(pooled_of(model), torch.load(IO, weights_only=True)["pooled"], atol=1e-4, rtol=0)


def test_a_checkpoint_of_the_other_backbone_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"tada2d_r50_w8_seed21\.pyth: not a tadaconvnext_tiny checkpoint "
                                         r"\(no backbone\.downsample_layers\.0\.0\.weight\)"):
        tadaconvnext_tiny(weights=W8)


def test_module_prefix_and_ema_state(tmp_path, official):
    state = {f"module.{k}": v for k, v in official["model_state"].items()}
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model_state": state, "model_ema_state": ema}, tmp_path / "ddp.pyth")
    plain = tada2d_r50(base_width=8)
    load_checkpoint(plain, tmp_path / "ddp.pyth")
    for key, value in plain.state_dict().items():
        assert torch.equal(value, official["model_state"][key]), key
    averaged = tada2d_r50(base_width=8)
    load_checkpoint(averaged, tmp_path / "ddp.pyth", ema=True)
    assert torch.equal(averaged.backbone.conv1.a.weight, official["model_state"]["backbone.conv1.a.weight"] * 0.5)
    with pytest.raises(ValueError, match="model_ema_state"):
        load_checkpoint(tada2d_r50(base_width=8), W8, ema=True)


def test_head_of_another_class_count_is_skipped_with_a_warning(caplog):
    model = tada2d_r50(base_width=8, num_classes=7)
    head_before = model.head.out.weight.clone()
    with pytest.warns(UserWarning, match=r"10 classes.*7 classes"):
        load_checkpoint(model, W8)
    assert torch.equal(model.head.out.weight, head_before)
    with caplog.at_level(logging.INFO, logger="feature_extraction.weights"):
        load_checkpoint(tada2d_r50(base_width=8), W8)  # no head: nothing to warn about
    assert "head" in caplog.text


def test_missing_unexpected_and_mis_shaped_keys_are_listed(tmp_path, official):
    state = dict(official["model_state"])
    del state["backbone.conv3.res_2.conv_branch.b_rf.a.bias"]
    state["backbone.conv9.extra.weight"] = torch.zeros(1)
    torch.save({"model_state": state}, tmp_path / "broken.pyth")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tada2d_r50(base_width=8), tmp_path / "broken.pyth")
    message = str(err.value)
    assert "broken.pyth" in message
    assert "missing keys (1): backbone.conv3.res_2.conv_branch.b_rf.a.bias" in message
    assert "unexpected keys (1): backbone.conv9.extra.weight" in message
    with pytest.raises(ValueError, match=r"shape mismatches .*backbone\.conv1\.a\.weight: file \(8, 3, 1, 7, 7\) vs model \(16"):
        load_checkpoint(tada2d_r50(base_width=16), W8)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        read_checkpoint(tmp_path / "nothing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list.pth: not a backbone checkpoint .* \(holds a list, expected a dict\)"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth: unrecognised checkpoint layout"):
        read_checkpoint(tmp_path / "other.pth")
    resnet_like = {"conv1.weight": torch.zeros(4, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1)}
    torch.save({**resnet_like, "layer9.x": torch.zeros(1)}, tmp_path / "odd_resnet.pth")
    with pytest.raises(ValueError, match="unexpected key 'layer9.x'"):
        read_checkpoint(tmp_path / "odd_resnet.pth")


def test_named_weights_carry_preprocessing():
    for backbone, choices in WEIGHTS.items():
        for name, spec in choices.items():
            assert spec.backbone == backbone and spec.name == name
            assert isinstance(spec.preprocessing, Preprocessing) and spec.preprocessing.clip_len > 0
    official_k400 = get_weights_spec("tada2d_r50", "official-k400").preprocessing
    assert (official_k400.mean, official_k400.std, official_k400.clip_len) == ((0.45,) * 3, (0.225,) * 3, 8)
    with pytest.raises(ValueError, match="choose one of"):
        get_weights_spec("tada2d_r50", "k700")
    with pytest.raises(ValueError, match="choose one of"):
        get_weights_spec("resnet18", "random")


def test_build_model_resolves_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tada2d_r50_k400_8x8.pyth"):
        build_model("tada2d_r50", "official-k400")
    with pytest.raises(FileNotFoundError, match=r"put it there"):
        build_model("tada2d_r50", "official-k400", weights_path=tmp_path)
    with pytest.raises(ValueError, match="take no file"):
        build_model("tada2d_r50", "random", weights_path=W8)
    with pytest.raises(ValueError, match="expect a torchvision-resnet50 checkpoint"):
        build_model("tada2d_r50", "imagenet", weights_path=W8)
    model, preprocessing = build_model("tada2d_r50", "official-k400", weights_path=W8)
    assert model.backbone.base_width == 8 and preprocessing.short_side == 256
    torch.testing.assert_close(pooled_of(model), torch.load(IO, weights_only=True)["pooled"], atol=1e-4, rtol=0)
