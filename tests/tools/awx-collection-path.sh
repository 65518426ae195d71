#!/usr/bin/env bash
# Print a collections path that holds awx.awx, for the syntax check of extensions/awx/configure_controller.yml,
# making it the first time: the ansible package on PyPI ships awx.awx, so its wheel is downloaded with pip (no
# Galaxy access needed) and only ansible_collections/awx/awx is taken out of it. Kept in the scratch dir.
#
# Usage:  ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/awx-collection-path.sh):$ANSIBLE_COLLECTIONS_PATH ...
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ansible 12.3.0 ships awx.awx 24.6.1, the AWX release whose rules the tests restate.
ANSIBLE_PACKAGE=ansible==12.3.0
root=$SG_WORK/awx-collections
if [ ! -f "$root/ansible_collections/awx/awx/MANIFEST.json" ]; then
    tmp=$(mktemp -d "$SG_WORK/awx-wheel.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    "$SG_VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps --only-binary :all: \
        "$ANSIBLE_PACKAGE" -d "$tmp" >&2
    rm -rf "$root.new" && mkdir -p "$root.new"
    "$SG_VENV/bin/python" - "$tmp" "$root.new" <<'PY'
import glob, sys, zipfile
wheel, = glob.glob(sys.argv[1] + '/ansible-*.whl')
with zipfile.ZipFile(wheel) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith('ansible_collections/awx/awx/')])
PY
    rm -rf "$root" && mv "$root.new" "$root"
fi
printf '%s\n' "$root"
