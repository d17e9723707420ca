"""The YAML -> dataclass config system: errors name the key and file, overrides apply, dumps round-trip."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from tal_common.config import ConfigError, add_config_args, config_to_yaml, load_config


@dataclass(frozen=True)
class Model:
    base_width: int = 64
    dropout: float = 0.5
    name: Literal["tada2d_r50", "tadaconvnext_tiny"] = "tada2d_r50"


@dataclass(frozen=True)
class Sampling:
    clip_len: int = 8
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    weights: str | None = None


@dataclass(frozen=True)
class Config:
    model: Model = field(default_factory=Model)
    sampling: Sampling = field(default_factory=Sampling)
    out: Path = Path("features.h5")
    verbose: bool = False


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    assert load_config(Config) == Config()


def test_file_values_and_int_to_float(tmp_path):
    path = _write(tmp_path, "model:\n  base_width: 8\n  dropout: 1\nsampling:\n  mean: [0.5, 0.5, 0.5]\n")
    cfg = load_config(Config, path)
    assert cfg.model.base_width == 8
    assert cfg.model.dropout == 1.0 and isinstance(cfg.model.dropout, float)
    assert cfg.sampling.mean == (0.5, 0.5, 0.5)
    assert cfg.sampling.clip_len == 8


def test_unknown_key_names_key_file_and_closest(tmp_path):
    path = _write(tmp_path, "model:\n  base_widht: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(Config, path)
    msg = str(err.value)
    assert "model.base_widht" in msg and str(path) in msg and "model.base_width" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="'sampler'.*did you mean 'sampling'"):
        load_config(Config, _write(tmp_path, "sampler: {}\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("model:\n  base_width: eight\n", "model.base_width"),
        ("model:\n  base_width: 8.5\n", "model.base_width"),
        ("verbose: 1\n", "verbose"),
        ("model:\n  name: resnet\n", "model.name"),
        ("sampling:\n  mean: 0.5\n", "sampling.mean"),
        ("model: 3\n", "model"),
    ],
)
def test_wrong_types_are_errors(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(Config, _write(tmp_path, text))


def test_overrides_win_and_are_checked(tmp_path):
    path = _write(tmp_path, "model:\n  base_width: 8\n")
    cfg = load_config(Config, path, ["model.base_width=16", "sampling.weights=/x/y.pyth", "verbose=true"])
    assert cfg.model.base_width == 16 and cfg.sampling.weights == "/x/y.pyth" and cfg.verbose is True
    assert load_config(Config, path, ["sampling.weights=null"]).sampling.weights is None
    with pytest.raises(ConfigError, match=r"'model\.base_widht' in --set model\.base_widht=3 \(did you mean 'model\.base_width'"):
        load_config(Config, path, ["model.base_widht=3"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Config, path, ["model.base_width"])


def test_base_then_file(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  base_width: 8\n  dropout: 0.1\n")
    path = _write(tmp_path, "model:\n  dropout: 0.2\n")
    cfg = load_config(Config, path, base=base)
    assert (cfg.model.base_width, cfg.model.dropout) == (8, 0.2)


def test_yaml_dump_round_trips(tmp_path):
    cfg = load_config(Config, None, ["model.base_width=16", "out=/tmp/f.h5"])
    text = config_to_yaml(cfg)
    assert yaml.safe_load(text)["model"]["base_width"] == 16
    again = load_config(Config, _write(tmp_path, text))
    assert again == cfg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Config, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Config, _write(tmp_path, "model: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Config, _write(tmp_path, "- 1\n- 2\n"))


def test_argparse_helpers():
    import argparse

    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args(["--config", "a.yaml", "--set", "x=1", "--set", "y.z=2"])
    assert args.config == Path("a.yaml") and args.overrides == ["x=1", "y.z=2"]
