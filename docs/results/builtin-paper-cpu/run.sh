#!/usr/bin/env bash
# Reproduce docs/results/builtin-paper-cpu: the plan's cells on the built-in dataset, then the
# report with the current code. Usage: bash docs/results/builtin-paper-cpu/run.sh [WORKDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-kpbench-paper-cpu}"
kpbench run "$here/plan.toml" --dry-run --time -w "$work"
kpbench run "$here/plan.toml" -w "$work"
kpbench report --name paper-cpu -w "$work/builtin"
