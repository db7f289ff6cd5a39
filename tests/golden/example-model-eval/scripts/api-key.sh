#!/usr/bin/env bash
# Print the API key clients send; --new NAME adds another key, --rotate NAME replaces one.
#
# Usage: scripts/api-key.sh [options]      (scripts/api-key.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift api-key "$@"
