# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared settings for the scripts in tests/. Source it; it defines variables and functions only.
#
#   SG_REPO     absolute physical path of the repository (= collection root)
#   SG_WORK     per-checkout scratch directory OUTSIDE the repository:
#               /tmp/sessionguard-mosh-<first 8 hex of sha1(SG_REPO)>
#   SG_VENV     the virtualenv with the tools: .venv, created by tests/bootstrap.sh (overridable)
#   SG_PYENV    pyenv root holding the target interpreters
#   SG_ANSIBLE_TEST  .venv's ansible-test
#   SG_TARGET_PYTHONS  target Python versions the collection supports (tests/config.yml)

SG_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
SG_WORK=/tmp/sessionguard-mosh-$(printf '%s' "$SG_REPO" | sha1sum | cut -c1-8)
SG_VENV=${SG_VENV:-$SG_REPO/.venv}
SG_PYENV=${PYENV_ROOT:-/root/.pyenv}
SG_TARGET_PYTHONS=(3.9 3.10 3.11 3.12 3.13)
SG_ANSIBLE_TEST=$SG_VENV/bin/ansible-test

# sg_fail MESSAGE: print "<script>: MESSAGE" (the calling script's name without .sh) and exit 1.
sg_fail() {
    local name=${0##*/}
    echo "${name%.sh}: $*" >&2
    exit 1
}

# sg_python_bin X.Y -> the bin directory of the newest real (non-shim) pyenv interpreter X.Y.
sg_python_bin() {
    local dir best=
    while IFS= read -r dir; do
        [ -x "$dir/python$1" ] && best=$dir
    done < <(printf '%s\n' "$SG_PYENV"/versions/"$1".*/bin | sort -V)
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}

# sg_collection_copy DIR: a fresh copy of this checkout at DIR/ansible_collections/sessionguard/mosh,
# as a one-commit git repository, for ansible-test. ansible-test needs the collection under such a
# path and only tests files git knows about, so the copy holds the tracked files and the untracked
# ones that are not ignored. Give each caller its own DIR so that runs of different ansible-test
# commands do not replace each other's copy.
sg_collection_copy() {
    local dest=$1/ansible_collections/sessionguard/mosh
    local -
    set -o pipefail
    rm -rf "$dest" && mkdir -p "$dest" || return 1
    (
        cd "$SG_REPO" || exit 1
        git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
            # tracked files deleted in the work tree are listed too; skip them
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done
    ) | rsync -a --from0 --files-from=- "$SG_REPO/" "$dest/" || return 1
    (
        cd "$dest" &&
            git init -q &&
            git add -A &&
            git -c user.name=ansible-test -c user.email=ansible-test@localhost -c commit.gpgsign=false \
                commit -q --no-verify -m "snapshot of $SG_REPO for ansible-test"
    )
}
