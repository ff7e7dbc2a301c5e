"""The tacq command line: python -m tacq <command> --help.

Each command builds configs from its flags and calls the same library functions the app
uses; stage times are printed so a run can be compared with the benchmarks. Offline: the
hub is never asked (set before transformers loads).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
