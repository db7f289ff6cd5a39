#!/usr/bin/env bash
# Send one real request to the server and print the answer and latency.
#
# Usage: scripts/test-inference.sh [options]      (scripts/test-inference.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift test-inference "$@"
