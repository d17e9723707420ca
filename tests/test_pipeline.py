"""ExtractStep: a CUDA out-of-memory error halves the model batch and retries (injected on CPU)."""
import numpy as np
import torch

from feature_extraction.config import ExtractConfig, make_sampler, preset_path, resolve_config
from feature_extraction.pipeline import ExtractStep, make_transform
from tal_common.config import load_config


class OutOfMemoryAbove(torch.nn.Module):
    """Per-clip channel means; raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.mean(dim=(2, 3, 4))


def test_out_of_memory_halves_the_batch_and_says_so_once(tmp_path, capsys):
    cfg = resolve_config(load_config(ExtractConfig, None, ["preprocess.crops=3", "preprocess.short_side=16",
                                                           "preprocess.crop_size=16"], base=preset_path("demo")), cuda=False)
    model = OutOfMemoryAbove(limit=6)  # 6 rows = 2 clips x 3 crops
    step = ExtractStep(model, make_transform(cfg, torch.device("cpu")), cfg, make_sampler(cfg), tmp_path, torch.device("cpu"))
    chunks = [torch.randint(0, 256, (n, 8, 16, 20, 3), dtype=torch.uint8) for n in (4, 3)]
    feats = step.forward(chunks)
    x = torch.cat([make_transform(cfg, torch.device("cpu"))(c) for c in chunks])
    np.testing.assert_allclose(feats, x.mean(dim=(2, 3, 4)).reshape(7, -1).numpy(), atol=1e-6)
    assert model.sizes[:3] == [21, 9, 3]  # 7 clips fail, 3 clips (21 // 2 rounded to whole clips) fail, 1 clip fits
    assert step.max_batch == 3
    again = step.forward(chunks[:1])  # the smaller batch is kept: no new failure
    assert again.shape == (4, 9) and max(model.sizes[len(model.sizes) - 4:]) == 3
    err = capsys.readouterr().err
    assert err.count("out of memory") == 1 and "halving the model batch" in err
