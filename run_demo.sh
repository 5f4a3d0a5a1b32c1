#!/usr/bin/env bash
# The demo: install what is missing, build, prepare the Beans data.
# (Training is added by the next parts; see docs/architecture.md.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash run_tests.sh --build-only
