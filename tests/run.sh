#!/usr/bin/env bash
# THE test command of sessionguard.mosh (CI runs it through .ci/run).
#
# Usage (as root):  bash tests/run.sh [extra pytest arguments, e.g. -k facts]
#
#   1. tests/bootstrap.sh    system packages, .venv, psutil on the target Pythons
#   2. tests/tools/sanity.sh ansible-test sanity, compile/import on Python 3.9 to 3.13
#   3. tests/tools/lint.sh   ansible-lint (production), changelog, yamllint, antsibull-docs
#   4. tests/tools/integration.sh  ansible-test integration --local (tests/integration/targets)
#   5. pytest                tests/unit, tests/live and tests/fleet (testpaths in pyproject.toml)
#
# Steps 2 to 5 all run even when an earlier one fails; the exit code is non-zero if any failed.
# pytest collecting no test at all (exit code 5) counts as a failure.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=tools/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools/common.sh"
cd "$SG_REPO" || exit 1

summary=()
failed=0
step() {
    local name=$1 start rc
    shift
    echo "=== $name"
    start=$SECONDS
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        summary+=("$(printf 'PASS  %-11s %4ss' "$name" $((SECONDS - start)))")
    else
        summary+=("$(printf 'FAIL  %-11s %4ss  (exit code %s)' "$name" $((SECONDS - start)) "$rc")")
        failed=1
    fi
    return "$rc"
}

print_summary() {
    echo "=== summary"
    printf '%s\n' "${summary[@]}"
}

if ! step bootstrap bash tests/bootstrap.sh; then
    print_summary
    exit 1
fi
step sanity bash tests/tools/sanity.sh
step lint bash tests/tools/lint.sh
step integration bash tests/tools/integration.sh

ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/collection-path.sh) || exit 1
export ANSIBLE_COLLECTIONS_PATH
step pytest "$SG_VENV/bin/python" -m pytest "$@"
pytest_rc=$?

print_summary
if [ "$pytest_rc" -eq 5 ]; then
    echo "run: FAILED: pytest collected no tests" >&2
fi
if [ "$failed" -ne 0 ]; then
    echo "run: FAILED" >&2
    exit 1
fi
echo "run: all passed"
