"""The YAML presets and configs shipped with tadaloc (``extract/*.yaml``, ``localize/*.yaml``), read through
``tal_common.config.packaged_configs``."""
