#!/usr/bin/env bash
# Serve the best run's model: patch the serving deployment (experiment.promote.to) to load it.
#
# Usage: scripts/promote.sh [options]      (scripts/promote.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift promote "$@"
