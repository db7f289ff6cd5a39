#!/usr/bin/env bash
# Build the image if needed, apply the manifests and wait until the application is ready.
#
# Usage: scripts/deploy.sh [options]      (scripts/deploy.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift deploy "$@"
