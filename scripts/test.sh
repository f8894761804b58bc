#!/usr/bin/env bash
# The whole test suite on tiny models (a few minutes on 2 CPU cores). Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export DLMS_CACHE_DIR="${DLMS_CACHE_DIR:-$(mktemp -d)}"
exec python -m pytest tests "$@"
