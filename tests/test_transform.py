"""The frames -> model input transform: official fixture, crop offsets, channel order, normalisation."""
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_extraction.transform import ClipTransform, crop_offsets, resized_size

DATA = Path(__file__).parent / "data" / "tadaconv_sampling"
K400 = dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))


def transform(short: int, crop: int, crops: int, resize: bool = True, **norm) -> ClipTransform:
    return ClipTransform(short_side=short, crop_size=crop, crops=crops, resize=resize, device=torch.device("cpu"),
                         **(norm or K400))


@pytest.mark.parametrize("name", ["landscape", "portrait", "square"])
@pytest.mark.parametrize("crops", [1, 3])
@pytest.mark.parametrize("crop", [12, 16])
def test_equals_the_official_kinetics_resized_crop(name, crops, crop):
    """Fixture: ToTensorVideo -> KineticsResizedCrop(16, crop, crops) -> NormalizeVideo run by the official code."""
    fixture = np.load(DATA / "kinetics_resized_crop.npz")
    frames = torch.from_numpy(fixture[f"{name}_input"])[None]  # (1, T, H, W, 3)
    want = torch.from_numpy(fixture[f"{name}_crops{crops}_scale16_crop{crop}"])  # (crops, 3, T, S, S)
    got = transform(16, crop, crops)(frames)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_crop_offsets_landscape_portrait_one_and_three():
    # landscape 455x256, crop 224: y centred at 16, x at 0 / 115 / 231
    assert crop_offsets(455, 256, 256, 224, 1) == [(16, 115)]
    assert crop_offsets(455, 256, 256, 224, 3) == [(16, 0), (16, 115), (16, 231)]
    # portrait 256x455: top / centre / bottom
    assert crop_offsets(256, 455, 256, 224, 3) == [(0, 16), (115, 16), (231, 16)]
    # square, crop = short side: the official branch takes the height
    assert crop_offsets(256, 256, 256, 256, 3) == [(0, 0), (0, 0), (0, 0)]
    # crop = short side on a landscape frame: three different horizontal positions
    assert crop_offsets(312, 256, 256, 256, 3) == [(0, 0), (0, 28), (0, 56)]
    with pytest.raises(ValueError, match="crops must be 1 or 3"):
        crop_offsets(312, 256, 256, 256, 2)


def test_three_crops_cut_left_centre_right_of_the_resized_frame():
    """Each crop of a column-index image carries its own columns (no identical centre crops)."""
    width, height = 20, 8
    cols = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :, None], (height, width, 3))
    frames = torch.from_numpy(np.ascontiguousarray(cols))[None, None]  # (1, 1, 8, 20, 3)
    out = transform(8, 8, 3, resize=False, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))(frames)
    firsts = out[:, 0, 0, 0, 0].tolist()
    assert firsts == pytest.approx([0, 6, 12])  # x = 0, x_max // 2 = 6, x_max = 12
    assert out[1, 0, 0, 0].tolist() == pytest.approx(list(range(6, 14)))


def test_rgb_channel_order_and_normalisation():
    """A pure red frame: channel 0 is (1 - 0.45) / 0.225, channels 1 and 2 are -0.45 / 0.225."""
    frame = np.zeros((1, 1, 4, 6, 3), np.uint8)
    frame[..., 0] = 255
    out = transform(4, 4, 1)(torch.from_numpy(frame))
    assert out.shape == (1, 3, 1, 4, 4)
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([(1 - 0.45) / 0.225, -2.0, -2.0]), atol=1e-6, rtol=0)
    grey = torch.full((1, 1, 4, 4, 3), 51, dtype=torch.uint8)  # 0.2
    imagenet = transform(4, 4, 1, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(grey)
    want = torch.tensor([(0.2 - 0.485) / 0.229, (0.2 - 0.456) / 0.224, (0.2 - 0.406) / 0.225])
    torch.testing.assert_close(imagenet[0, :, 0, 0, 0], want, atol=1e-6, rtol=0)


def test_resize_is_plain_bilinear_without_antialias():
    """A 4x downscale of one bright column in four: bilinear samples only two source columns per output
    pixel, both dark; an antialiased resize would average the bright one in (~64)."""
    stripes = np.zeros((16, 32), np.uint8)
    stripes[:, ::4] = 255  # one bright column in four
    frames = torch.from_numpy(np.repeat(stripes[None, None, :, :, None], 3, axis=-1))
    out = transform(4, 4, 1, mean=(0, 0, 0), std=(1, 1, 1))(frames)  # 32x16 -> 8x4, centre crop 4x4
    # output column j samples source x = 4j + 1.5: between columns 1 and 2 (both dark) -> 0
    assert resized_size(32, 16, 4) == (8, 4)
    assert out.abs().max().item() == 0.0


def test_decoder_resized_frames_are_only_cropped():
    frames = torch.randint(0, 256, (2, 3, 16, 21, 3), dtype=torch.uint8)
    out = transform(16, 16, 1, resize=False, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))(frames)
    torch.testing.assert_close(out, frames[:, :, :, 2:18].permute(0, 4, 1, 2, 3).float(), atol=1e-4, rtol=0)
