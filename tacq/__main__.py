"""python -m tacq: the command line (tacq.cli)."""

from __future__ import annotations

import sys

from tacq.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
