#!/usr/bin/env bash
# The README's first command: set everything up, bring up a demo fleet of 4 namespaced hosts with
# live mosh sessions for alice and bob, audit it, revoke bob across the fleet, show what happened.
# Run as root. The fleet stays up afterwards; tear it down with: tests/fleet/fleet down
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "==> Installing what the demo needs (tests/bootstrap.sh)"
bash tests/bootstrap.sh
ANSIBLE_COLLECTIONS_PATH=$(bash tests/tools/collection-path.sh)
export ANSIBLE_COLLECTIONS_PATH
exec .venv/bin/python tests/demo.py
