#!/usr/bin/env bash
# Run the trials of experiment.sweep as one Indexed Job, experiment.parallelism at a time.
#
# Usage: scripts/run-sweep.sh [options]      (scripts/run-sweep.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift sweep "$@"
