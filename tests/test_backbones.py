"""TAda2D-R50 and TAdaConvNeXt-T: official outputs, official key layout, plug-and-play ImageNet init."""
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from feature_extraction.backbones import drop_path, tada2d_r50, tadaconvnext_tiny, temporal_avg_pool3
from feature_extraction.weights import load_checkpoint

DATA = Path(__file__).parent / "data" / "tadaconv"
W8 = DATA / "tada2d_r50_w8_seed21.pyth"
MODELSCOPE = Path(__file__).parent / "data" / "tadaconvnext_modelscope"
MODELSCOPE_W8 = MODELSCOPE / "tadaconvnext_w8_modelscope.pt"


def test_w8_checkpoint_reproduces_official_outputs():
    io = torch.load(DATA / "tada2d_r50_w8_seed21.io.pt", weights_only=True)
    model = tada2d_r50(base_width=8, num_classes=10).eval()
    load_checkpoint(model, W8)
    with torch.no_grad():
        features = model.forward_features(io["input"])
        logits = model(io["input"])
    torch.testing.assert_close(features, io["backbone_output"], atol=1e-4, rtol=0)
    torch.testing.assert_close(model.backbone.pool(features), io["pooled"], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits.softmax(-1), io["probs"], atol=1e-5, rtol=0)
    assert model.feature_dim == 256


def test_full_width_state_dict_is_official():
    expected = (DATA / "official_tada2d_r50_state_dict_keys.txt").read_text().splitlines()
    model = tada2d_r50(num_classes=400)
    ours = [f"{k}\t{tuple(v.shape)}\t{str(v.dtype).removeprefix('torch.')}" for k, v in model.state_dict().items()]
    assert len(expected) == 560
    assert sorted(ours) == sorted(expected)
    assert model.feature_dim == 2048


def test_shapes_and_time_resolution():
    model = tada2d_r50(base_width=4).eval()
    with torch.no_grad():
        clip = torch.randn(2, 3, 3, 64, 96)
        assert model.forward_features(clip).shape == (2, 128, 3, 2, 3)
        assert model(clip).shape == (2, 128)
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        model(torch.randn(3, 5, 64, 64))


def test_training_step_runs():
    model = tada2d_r50(base_width=4, num_classes=3).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 3, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    grad = model.backbone.conv2.res_1.conv_branch.b_rf.b.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the zero-initialised calibration learns


def test_temporal_avg_pool_matches_avgpool3d():
    x = torch.randn(2, 3, 5, 4, 4)
    pool = nn.AvgPool3d((3, 1, 1), stride=1, padding=(1, 0, 0))
    torch.testing.assert_close(temporal_avg_pool3(x), pool(x))
    short = x[:, :, :1]  # AvgPool3d refuses T < 3; the same zero-padded average:
    padded = nn.functional.pad(short, (0, 0, 0, 0, 1, 1))
    torch.testing.assert_close(temporal_avg_pool3(short), nn.functional.avg_pool3d(padded, (3, 1, 1), 1))


def randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial BN statistics so that a wrong mapping cannot hide behind identity BNs."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)


def test_plug_and_play_from_torchvision_resnet50(tmp_path):
    """At init TAda2D-R50 == the per-frame 2D ResNet-50 without max-pool (stride moved into conv2's first block)."""
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()
    with torch.no_grad():
        randomise_batchnorm(resnet)
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    model = tada2d_r50(weights=tmp_path / "resnet50.pth").eval()

    resnet.maxpool = nn.Identity()
    resnet.layer1[0].conv2.stride = (2, 2)
    resnet.layer1[0].downsample[0].stride = (2, 2)
    resnet.fc = nn.Identity()
    resnet.eval()
    clip = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        per_frame = resnet(clip[0].transpose(0, 1))  # (T, 2048)
        torch.testing.assert_close(model(clip)[0], per_frame.mean(0), atol=1e-4, rtol=1e-5)


def test_tadaconvnext_loads_torchvision_convnext(tmp_path):
    """Every 2D weight of torchvision's ConvNeXt-T is used; a static clip then gives the 2D network's feature."""
    torch.manual_seed(0)
    convnext = torchvision.models.convnext_tiny().eval()
    torch.save(convnext.state_dict(), tmp_path / "convnext_tiny.pth")
    model = tadaconvnext_tiny(num_classes=5)
    with pytest.warns(UserWarning, match="head"):
        checkpoint = load_checkpoint(model, tmp_path / "convnext_tiny.pth")
    loaded = set(checkpoint.state_dict)
    not_loaded = {k for k in model.state_dict() if k not in loaded}
    assert not_loaded and all(".dwconv_rf." in k or k.startswith("head.") for k in not_loaded)
    assert len(loaded) == len(convnext.state_dict()) - 2  # everything but the ImageNet classifier's linear

    model.eval()
    frames = torch.randn(2, 3, 64, 64)
    clip = frames[:, :, None].expand(2, 3, 2, 64, 64)
    with torch.no_grad():
        expected = convnext.classifier[:2](convnext.avgpool(convnext.features(frames)))
        assert model.forward_features(clip).shape == (2, 768, 1, 2, 2)
        torch.testing.assert_close(model.backbone.pool(model.forward_features(clip)), expected, atol=1e-4, rtol=1e-4)


def test_tadaconvnext_equals_the_modelscope_reference():
    """A thin ModelScope TAdaConvNeXt (LN + GELU route, non-zero calibration) loads and gives its outputs."""
    io = torch.load(MODELSCOPE / "io.pt", weights_only=True)
    clip = io["clip"].float()  # (2, 3, 8, 64, 64), stored as float16, computed in float32 on both sides
    model = tadaconvnext_tiny(num_classes=5, weights=MODELSCOPE_W8).eval()
    assert model.feature_dim == 64 and model.backbone.stages[0][0].dwconv.weight.shape == (1, 1, 8, 1, 7, 7)
    with torch.no_grad():
        features = model.forward_features(clip)
        pooled = model.backbone.pool(features)
        probs = model(clip).softmax(-1)
        alpha, alpha_bias = model.backbone.stages[0][0].dwconv_rf(model.backbone.downsample_layers[0](clip))
    torch.testing.assert_close(features, io["stage4_map"], atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, io["features"], atol=1e-4, rtol=0)
    torch.testing.assert_close(probs, io["probs"], atol=1e-5, rtol=0)
    assert (alpha - 1).abs().max() > 0.3 and (alpha_bias - 1).abs().max() > 0.3  # the calibration is exercised

    for m in model.modules():
        if hasattr(m, "reset_calibration"):
            m.reset_calibration()
    with torch.no_grad():
        assert (model.backbone.pool(model.forward_features(clip)) - io["features"]).abs().max() > 0.05


def test_tadaconvnext_modelscope_key_map_is_the_identity(tmp_path):
    """ModelScope's ``model_state`` keys are ours one to one; a BatchNorm-route checkpoint is refused by name."""
    state = torch.load(MODELSCOPE_W8, weights_only=True)["model_state"]
    model = tadaconvnext_tiny(base_width=8, num_classes=5)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(".dwconv_rf.ln." in k for k in state) == 2 * 18
    bn_route = {k: v for k, v in state.items() if ".dwconv_rf.ln." not in k}
    for key in [k for k in state if k.endswith(".dwconv_rf.ln.weight")]:
        prefix = key[: -len("ln.weight")]
        hidden = state[key].shape
        bn_route.update({f"{prefix}bn.weight": torch.ones(hidden), f"{prefix}bn.bias": torch.zeros(hidden),
                         f"{prefix}bn.running_mean": torch.zeros(hidden), f"{prefix}bn.running_var": torch.ones(hidden),
                         f"{prefix}bn.num_batches_tracked": torch.tensor(0)})
    torch.save({"model_state": bn_route}, tmp_path / "bn_route.pt")
    with pytest.raises(ValueError) as err:
        tadaconvnext_tiny(weights=tmp_path / "bn_route.pt")
    message = str(err.value)
    assert "bn_route.pt" in message and "missing keys (36)" in message and "unexpected keys (90)" in message
    assert "backbone.stages.0.0.dwconv_rf.ln.weight" in message and "backbone.stages.0.0.dwconv_rf.bn.running_var" in message


def test_drop_path_drops_whole_samples_and_keeps_the_expectation():
    x = torch.ones(4000, 3, 2)
    assert torch.equal(drop_path(x, 0.3, training=False), x)
    torch.manual_seed(0)
    y = drop_path(x, 0.3, training=True)
    per_sample = y.flatten(1)
    assert (per_sample == per_sample[:, :1]).all()  # a sample's branch is kept or dropped as a whole
    assert torch.isclose(per_sample[:, 0], torch.tensor(0.0)).logical_or(torch.isclose(per_sample[:, 0], torch.tensor(1 / 0.7))).all()
    assert abs(y.mean().item() - 1.0) < 0.05
