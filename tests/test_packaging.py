"""The wheel ships every package of the checkout and the configs (``scripts/check_wheel.sh`` runs the tools from it)."""
import configparser
from pathlib import Path

from tal_common.config import ConfigError, packaged_configs, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in ROOT.glob("*/**/__init__.py")
             if not str(p.relative_to(ROOT)).startswith(("tests", "scripts", ".venv", "build"))}
    found = {"tadaloc_configs" if name == "configs" else name for name in found}
    assert found == listed


def test_configs_resolve_by_name_path_or_checkout_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the checkout: relative paths no longer exist as files
    shipped = packaged_configs("localize")
    assert {"hacs_bmn", "ek100_bmn", "thumos14_bmn", "demo_bmn"} <= set(shipped)
    assert set(packaged_configs("extract")) >= {"hacs", "ek100", "demo"}
    for value in ("hacs_bmn", "hacs_bmn.yaml", "configs/localize/hacs_bmn.yaml"):
        assert resolve_config_path(value, "localize") == shipped["hacs_bmn"]
    own = tmp_path / "mine.yaml"
    own.write_text("data:\n  tscale: 8\n")
    assert resolve_config_path(own, "localize") == own
    try:
        resolve_config_path("nope_bmn", "localize")
    except ConfigError as exc:
        assert "nope_bmn" in str(exc) and "hacs_bmn" in str(exc)
    else:
        raise AssertionError("an unknown config name must be an error")
