#!/usr/bin/env bash
# Prepare this machine for the test suite: system packages, the repository's .venv with the
# development tools, and psutil on the target Pythons that should have it.
#
# Usage (as root, from anywhere):  bash tests/bootstrap.sh
#
# Idempotent and quiet: prints nothing when everything succeeds, and skips every step that is
# already done (the venv is rebuilt only when its requirement files or interpreter change).
# On failure it prints the failing command's output and exits non-zero.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=tools/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools/common.sh"

# Without the shellcheck program, ansible-test's "shellcheck" sanity test is skipped.
# python3-psutil: the fleet's Debian-Python hosts (tests/fleet) have psutil, except one that hides it.
# fuse3 + python3-fusepy: the hanging FUSE server of tests/lib/sgtest/fuse.py (fusermount3; Debian's python3).
# at, cron, attr: what the lockout tests set aside and restore (at jobs, crontabs; setfattr for extended attributes).
# slapd, ldap-utils, nslcd, libnss-ldapd: the fleet's LDAP directory (tests/fleet/sgfleet/ldap.py). This machine's
# own nsswitch.conf is left alone (preseeded below); only fleet hosts point NSS at the directory.
# chromium: the fleet report's HTML is opened in it (Playwright drives it; it cannot fetch its own browser here).
# gcc: benchmarks/crowd.c (the crowded process table of the benchmarks).
# rsyslog: each fleet host runs its own (tests/lib/sgtest/fleet/syslog.py), for the syslog lines of a revocation.
# openjdk-17-jre-headless: ansible-rulebook's rule engine (drools through jpy) needs Java 17 (tests/fleet/test_eda.py).
APT_PACKAGES=(mosh openssh-server openssh-client tmux procps psmisc iproute2 util-linux rsync git sudo python3-venv
    shellcheck python3-psutil fuse3 python3-fusepy at cron attr slapd ldap-utils nslcd libnss-ldapd rsyslog
    chromium gcc openjdk-17-jre-headless)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

die() {
    echo "bootstrap: $*" >&2
    exit 1
}

# run CMD...: run quietly; on failure show its output and stop.
run() {
    : >"$log"
    if ! "$@" >"$log" 2>&1; then
        echo "bootstrap: FAILED: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

mkdir -p "$SG_WORK"
exec 9>"$SG_WORK/bootstrap.lock"
flock 9  # serialise concurrent bootstraps of the same checkout

# 1. System packages ------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}); run this script as root"
    export DEBIAN_FRONTEND=noninteractive
    # No default slapd database and no change to this machine's nsswitch.conf: the tests run their own directory.
    printf '%s\n' 'slapd slapd/no_configuration boolean true' 'libnss-ldapd libnss-ldapd/nsswitch multiselect' \
        'nslcd nslcd/ldap-uris string ldap://127.0.0.1/' 'nslcd nslcd/ldap-base string dc=corp,dc=example' >"$log.debconf"
    run debconf-set-selections "$log.debconf"
    rm -f "$log.debconf"
    run apt-get update -q
    run apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. The repository's virtualenv ------------------------------------------------------------
# Prefer a real interpreter path over a pyenv shim: the shim depends on PYENV_VERSION and
# friends, which tools such as ansible-test strip from the environment.
venv_python=$SG_PYENV/versions/3.11.7/bin/python
if [ ! -x "$venv_python" ]; then
    command -v python3 >/dev/null || die "neither $venv_python nor python3 found"
    venv_python=$(python3 -c 'import sys; print(sys.executable)')  # resolves a shim to the real binary
fi

req_files=("$SG_REPO/requirements-dev.txt" "$SG_REPO/tests/unit/requirements.txt")
# The live-test harness may add its own requirements; install them when present.
[ -f "$SG_REPO/tests/live/requirements.txt" ] && req_files+=("$SG_REPO/tests/live/requirements.txt")

stamp_file=$SG_VENV/.sessionguard-bootstrap
stamp=$({
    echo "$venv_python"
    cat "${req_files[@]}"
} | sha256sum | cut -d' ' -f1)

if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ] || ! "$SG_VENV/bin/python" -c '' 2>/dev/null; then
    if [ -e "$SG_VENV" ] && [ "$(readlink -f "$SG_VENV/bin/python" 2>/dev/null)" != "$(readlink -f "$venv_python")" ]; then
        rm -rf "$SG_VENV"  # built with another interpreter (or broken): start over
    fi
    [ -x "$SG_VENV/bin/python" ] || run "$venv_python" -m venv "$SG_VENV"
    pip_args=()
    for f in "${req_files[@]}"; do pip_args+=(-r "$f"); done
    run "$SG_VENV/bin/python" -m pip install --disable-pip-version-check -q "${pip_args[@]}"
    echo "$stamp" >"$stamp_file"
fi

# awx.awx for the syntax check of extensions/awx/configure_controller.yml (from the ansible wheel on PyPI).
run bash "$SG_REPO/tests/tools/awx-collection-path.sh"

# 3. Target Pythons: psutil on 3.13, deliberately none on 3.9 ---------------------------------
# Python 3.13 is the "with psutil" target, Python 3.9 the "without psutil" target of the
# live tests (the modules must work on both).
py313=$(sg_python_bin 3.13) || die "Python 3.13 not found under $SG_PYENV/versions"
py39=$(sg_python_bin 3.9) || die "Python 3.9 not found under $SG_PYENV/versions"
if ! "$py313/python3.13" -c 'import psutil' 2>/dev/null; then
    run "$py313/python3.13" -m pip install --disable-pip-version-check -q psutil
fi
if "$py39/python3.9" -c 'import psutil' 2>/dev/null; then
    echo "bootstrap: note: psutil is installed for $py39/python3.9, which tests use as the" \
        "'no psutil' target; leaving it, but those tests will not cover the /proc-only path there." >&2
fi
exit 0
