#!/usr/bin/env bash
# Lint the collection: ansible-lint (production profile, from .ansible-lint), the changelog
# fragments, yamllint, and the plugin and role documentation (semantic markup in
# meta/argument_specs.yml is checked only by antsibull-docs).
#
# Usage:  bash tests/tools/lint.sh
# Needs:  tests/bootstrap.sh to have run. Works offline.
# Runs every linter, then exits non-zero if any of them failed.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ -x "$SG_VENV/bin/ansible-lint" ] || {
    echo "lint: $SG_VENV/bin/ansible-lint not found; run tests/bootstrap.sh first" >&2
    exit 1
}
# ansible-lint --offline resolves the collection's own FQCNs (roles, modules) only through a
# collections path: without one it reports syntax-check[unknown-module] and "role not found".
ANSIBLE_COLLECTIONS_PATH=$(bash "$SG_REPO/tests/tools/collection-path.sh") || exit 1
# awx.awx, which extensions/awx/configure_controller.yml uses.
ANSIBLE_COLLECTIONS_PATH=$ANSIBLE_COLLECTIONS_PATH:$(bash "$SG_REPO/tests/tools/awx-collection-path.sh") || exit 1
export ANSIBLE_COLLECTIONS_PATH
export PATH=$SG_VENV/bin:$PATH
cd "$SG_REPO" || exit 1

failed=()
step() {
    local name=$1
    shift
    echo "--- lint: $name"
    "$@" || failed+=("$name")
}

step ansible-lint ansible-lint --offline --nocolor
step antsibull-changelog antsibull-changelog lint
step yamllint yamllint --strict .
step antsibull-docs antsibull-docs lint-collection-docs --plugin-docs --skip-rstcheck .

if ((${#failed[@]})); then
    echo "lint: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "lint: passed (ansible-lint, antsibull-changelog, yamllint, antsibull-docs)"
