#!/usr/bin/env bash
# Print a directory suitable for ANSIBLE_COLLECTIONS_PATH in which this checkout is visible as
# the collection sessionguard.mosh, creating it if needed:
#
#   /tmp/sessionguard-mosh-<hash>/collections/ansible_collections/sessionguard/mosh -> <repo>
#
# It lives outside the repository so that neither ansible-lint nor pytest-ansible nor
# ansible-galaxy ever sees a copy of the collection inside itself.
#
# Usage:  export ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/collection-path.sh)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

root=$SG_WORK/collections
link=$root/ansible_collections/sessionguard/mosh
if [ "$(readlink "$link" 2>/dev/null)" != "$SG_REPO" ]; then
    mkdir -p "${link%/*}"
    ln -sfn "$SG_REPO" "$link.tmp.$$"
    mv -T "$link.tmp.$$" "$link"  # atomic replace, safe against concurrent callers
fi
printf '%s\n' "$root"
