#!/usr/bin/env bash
# Run the ansible-test integration targets (tests/integration/targets) on this host, as root,
# without docker: `ansible-test integration --local --allow-destructive`.
#
# Usage (as root):  bash tests/tools/integration.sh [-v] [extra ansible-test integration arguments,
#                   e.g. a target name: revoke_sessions]
# Needs:  tests/bootstrap.sh to have run (.venv with ansible-core; mosh, openssh-server, tmux).
# Log:    /tmp/sessionguard-mosh-<hash>/integration.log
#
# The targets create throwaway users, start a private sshd on 127.0.0.1 with real mosh sessions
# (setup_mosh_session), end sessions, and remove all of it again, also when a test fails.
#  * --local: controller and managed node are this host; ansible-test runs the modules with the
#    Python it runs on (.venv). Nothing is installed: .venv has what the controller needs.
#  * --allow-destructive: the targets are marked destructive (they add users and signal
#    processes), and ansible-test runs such targets on an unmanaged host only when told to.
#  * ansible-test needs the collection at .../ansible_collections/sessionguard/mosh: the checkout is
#    copied there as sanity.sh does (sg_collection_copy in common.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ -x "$SG_ANSIBLE_TEST" ] || sg_fail "$SG_ANSIBLE_TEST not found; run tests/bootstrap.sh first"
[ "$(id -u)" -eq 0 ] || sg_fail "the targets create users and start sshd: run as root"

dest=$SG_WORK/integration/ansible_collections/sessionguard/mosh
sg_collection_copy "$SG_WORK/integration" || sg_fail "could not copy the collection to $dest"

log=$SG_WORK/integration.log
set +e
(
    cd "$dest"
    PATH="$SG_VENV/bin:$PATH" "$SG_ANSIBLE_TEST" integration --local --allow-destructive --color no "$@"
) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# A target that ansible-test leaves out (an alias it does not accept here) is only a warning to it.
if grep -E '^WARNING: Excluding tests marked' "$log" >&2; then
    echo "integration: FAILED: targets were excluded (above)" >&2
    rc=1
fi
if [ "$rc" -ne 0 ]; then
    echo "integration: FAILED (ansible-test exit code $rc; log: $log)" >&2
    exit 1
fi
echo "integration: passed (log: $log)"
