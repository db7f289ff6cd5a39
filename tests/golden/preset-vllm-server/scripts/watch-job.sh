#!/usr/bin/env bash
# Follow a submitted job until it ends; exits with the job's outcome.
#
# Usage: scripts/watch-job.sh [options]      (scripts/watch-job.sh --help lists them)
# Works from any directory. Every run re-reads config.yaml, so edits take effect at once;
# --dry-run prints the oc commands instead of running them.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=_common.sh
source "$here/_common.sh"
mlshift watch "$@"
