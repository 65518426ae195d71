# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared settings for the scripts in tests/. Source it; it defines variables and functions only.
#
#   SG_REPO     absolute physical path of the repository (= collection root)
#   SG_WORK     per-checkout scratch directory OUTSIDE the repository:
#               /tmp/sessionguard-mosh-<first 8 hex of sha1(SG_REPO)>
#   SG_VENV     the virtualenv with the tools: .venv, created by tests/bootstrap.sh (overridable)
#   SG_PYENV    pyenv root holding the target interpreters
#   SG_TARGET_PYTHONS  target Python versions the collection supports (tests/config.yml)

SG_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
SG_WORK=/tmp/sessionguard-mosh-$(printf '%s' "$SG_REPO" | sha1sum | cut -c1-8)
SG_VENV=${SG_VENV:-$SG_REPO/.venv}
SG_PYENV=${PYENV_ROOT:-/root/.pyenv}
SG_TARGET_PYTHONS=(3.9 3.10 3.11 3.12 3.13)

# sg_python_bin X.Y -> the bin directory of the newest real (non-shim) pyenv interpreter X.Y.
sg_python_bin() {
    local dir best=
    while IFS= read -r dir; do
        [ -x "$dir/python$1" ] && best=$dir
    done < <(printf '%s\n' "$SG_PYENV"/versions/"$1".*/bin | sort -V)
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}
