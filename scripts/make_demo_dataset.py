#!/usr/bin/env python
"""Generate (or, with --validate, only check) the synthetic demo dataset: the ``make-demo-dataset`` command
(tal_common/demo_cli.py), runnable from a checkout without installing."""
import sys

from tal_common.demo_cli import main

if __name__ == "__main__":
    sys.exit(main())
