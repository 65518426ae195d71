#!/usr/bin/env bash
# Run `ansible-test sanity` on this checkout, with compile and import on every supported target
# Python (3.9 to 3.13), without docker and without access to ci-files.testing.ansible.com.
#
# Usage:  bash tests/tools/sanity.sh [-v] [extra ansible-test sanity arguments, e.g. --test pep8]
# Needs:  tests/bootstrap.sh to have run (.venv with ansible-core; pyenv Pythons 3.9 to 3.13).
# Log:    /tmp/sessionguard-mosh-<hash>/sanity.log
#
# How it works around this environment (no docker, no access to Ansible's CI file host):
#  * ansible-test needs the collection at .../ansible_collections/sessionguard/mosh and only
#    tests files git knows about. The repository's directory is not named like that, so the
#    tracked and untracked-but-not-ignored files are copied into a fresh git repository at
#    /tmp/sessionguard-mosh-<hash>/ansible-test/ansible_collections/sessionguard/mosh.
#  * ansible-test keeps only a few environment variables (PATH, HOME, ...), so pyenv shims
#    cannot work inside it. PATH gets the real pyenv bin directories of 3.9 to 3.13 instead.
#  * The sanity virtualenvs bootstrap pip with a get-pip script downloaded from
#    ci-files.testing.ansible.com (unreachable here), unless ~/.ansible/test/cache/get_pip_<ver>.py
#    exists. We put a stand-in there that bootstraps pip with the stdlib's ensurepip and then
#    upgrades it to the version ansible-test asks for from the normal package index.
#  * Neither --venv nor --requirements is used: in the default "origin" mode ansible-test runs
#    its controller from .venv, which already has everything ansible-test's controller needs
#    (ansible-core and its dependencies), and still builds its own pinned per-test virtualenvs
#    (pylint, pep8, validate-modules, yamllint, import, ...) in ~/.ansible/test/venv. --requirements
#    would re-pin packages inside .venv; --venv would build one more virtualenv for nothing.
#  * A Python that ansible-test cannot find is only a warning to ansible-test; here it fails.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ -x "$SG_ANSIBLE_TEST" ] || sg_fail "$SG_ANSIBLE_TEST not found; run tests/bootstrap.sh first"

# 1. Real interpreters for every target Python ------------------------------------------------
path_dirs=
for v in "${SG_TARGET_PYTHONS[@]}"; do
    dir=$(sg_python_bin "$v") || sg_fail "Python $v not found under $SG_PYENV/versions; compile/import would be skipped"
    path_dirs+=$dir:
done

# Drop pyenv shims from the inherited PATH: inside ansible-test they cannot work, and a shim
# such as python3.8 would look like an interpreter to ansible-test.
inherited_path=
IFS=: read -r -a path_entries <<<"$PATH"
for entry in "${path_entries[@]}"; do
    case $entry in */shims) ;; *) inherited_path+=${inherited_path:+:}$entry ;; esac
done

# 2. Offline stand-in for ansible-test's get-pip download --------------------------------------
# ansible-test 2.19 reads ~/.ansible/test/cache/get_pip_<pip version with _ for .>.py
# (ansible_test/_util/target/setup/requirements.py, bootstrap()) and runs it as
#   python get_pip_X.py --disable-pip-version-check pip==X [--no-setuptools] [--no-wheel]
# in a virtualenv created with --without-pip. Ask ansible-test which pip version it wants.
pip_versions=$("$SG_VENV/bin/python" - "${SG_TARGET_PYTHONS[@]}" <<'EOF'
import sys
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(' '.join(sorted({get_venv_packages(SimpleNamespace(version=v))['pip'] for v in sys.argv[1:]})))
EOF
) || sg_fail "could not read the pip version ansible-test bootstraps"
cache_dir=$HOME/.ansible/test/cache
mkdir -p "$cache_dir"
for pip_version in $pip_versions; do
    get_pip=$cache_dir/get_pip_${pip_version//./_}.py
    # Keep a real get-pip script if one was downloaded; (re)write our stand-in otherwise.
    if [ -e "$get_pip" ] && ! grep -q 'sessionguard-get-pip-stand-in' "$get_pip"; then
        continue
    fi
    cat >"$get_pip.tmp" <<'EOF'
"""Offline stand-in for ansible-test's get-pip script (sessionguard-get-pip-stand-in).

Written by tests/tools/sanity.sh of sessionguard.mosh. Bootstraps pip from the wheel bundled
with the interpreter (ensurepip), then installs the requested packages (pip==X) from the
configured package index; if that fails, the bundled pip is kept.
"""
import subprocess
import sys

args = sys.argv[1:]
packages = [a for a in args if not a.startswith('-')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'], stdout=subprocess.DEVNULL)
if packages and subprocess.call([sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check'] + packages) != 0:
    sys.stderr.write('get-pip stand-in: could not install %s; keeping the bundled pip\n' % ' '.join(packages))
# ensurepip also brings setuptools on Python < 3.12; remove what real get-pip was told to leave out.
unwanted = [name for name, flag in (('setuptools', '--no-setuptools'), ('wheel', '--no-wheel')) if flag in args]
if unwanted:
    subprocess.call([sys.executable, '-m', 'pip', 'uninstall', '-q', '-y'] + unwanted, stderr=subprocess.DEVNULL)
EOF
    mv "$get_pip.tmp" "$get_pip"
done

# 3. A fresh copy of the collection where ansible-test wants it --------------------------------
dest=$SG_WORK/ansible-test/ansible_collections/sessionguard/mosh
sg_collection_copy "$SG_WORK/ansible-test" || sg_fail "could not copy the collection to $dest"

# 4. Run ansible-test ------------------------------------------------------------------------
log=$SG_WORK/sanity.log
set +e
(
    cd "$dest"
    PATH="$path_dirs$SG_VENV/bin:$inherited_path" "$SG_ANSIBLE_TEST" sanity --color no "$@"
) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# 5. Judge ------------------------------------------------------------------------------------
problems=0
# Any skip of a sanity test on a supported target Python is a failure: without --docker, ansible-test
# only warns ("Skipping sanity test ... because it could not be found") for a Python missing on PATH,
# and the collection must pass compile and import on every Python it supports.
versions_re=$(IFS='|'; echo "${SG_TARGET_PYTHONS[*]//./\\.}")
if grep -E "Skipping sanity test .* on Python ($versions_re)( |\.|$)" "$log" >&2; then
    echo "sanity: FAILED: the test(s) above were skipped on a supported Python" >&2
    problems=1
fi
# A test whose tool is missing (e.g. shellcheck) is skipped with only a warning, too.
if grep -E '^WARNING: Required program .* not found' "$log" >&2; then
    echo "sanity: FAILED: a program a sanity test needs is missing (tests/bootstrap.sh installs it)" >&2
    problems=1
fi
# When there is code to test, compile and import must have run on every target Python.
# (Left out when the run was narrowed by arguments other than verbosity, e.g. --test pep8.)
full_run=1
for arg in "$@"; do
    case $arg in -v | -vv | -vvv | --verbose) ;; *) full_run=0 ;; esac
done
if [ "$full_run" -eq 1 ]; then
    need=()
    [ -n "$(cd "$dest" && git ls-files '*.py')" ] && need+=(compile)
    [ -n "$(cd "$dest" && git ls-files 'plugins/modules/*.py' 'plugins/module_utils/*.py')" ] && need+=(import)
    for t in "${need[@]}"; do
        for v in "${SG_TARGET_PYTHONS[@]}"; do
            grep -qF "Running sanity test \"$t\" on Python $v" "$log" || {
                echo "sanity: FAILED: \"$t\" did not run on Python $v" >&2
                problems=1
            }
        done
    done
fi
if [ "$rc" -ne 0 ] || [ "$problems" -ne 0 ]; then
    echo "sanity: FAILED (ansible-test exit code $rc; log: $log)" >&2
    exit 1
fi
echo "sanity: passed (compile/import on Python ${SG_TARGET_PYTHONS[*]}; log: $log)"
