#!/usr/bin/env bash
# Delete what deploy created (the workspace volume only with --volumes).
#
# Usage: scripts/delete.sh [options]      (scripts/delete.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift delete "$@"
