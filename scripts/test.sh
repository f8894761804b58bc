#!/usr/bin/env bash
# The whole test suite on tiny models (a few minutes on 2 CPU cores). Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export DLMS_CACHE_DIR="${DLMS_CACHE_DIR:-$(mktemp -d)}"
# Tiny models run faster on one thread, and a busy second core does not stall them.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if ! command -v chromedriver > /dev/null || ! { command -v chromium > /dev/null || command -v chromium-browser > /dev/null; }; then
  echo "[dlms] no Chromium here: the page test (tests/serving/test_browser.py) is skipped;" \
       "install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver) to run it" >&2
fi
exec python -m pytest tests "$@"
