"""The demo behind ``bash tests/demo.sh``: a fleet of 4 hosts, live mosh sessions for alice and bob,
an audit, then bob revoked across the fleet with ``ansible-playbook sessionguard.mosh.revoke``.

The fleet stays up afterwards so it can be explored; ``tests/fleet/fleet down`` tears it down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, 'lib'))

from sgtest.ansible import ansible_env  # noqa: E402  pylint: disable=wrong-import-position
from sgtest.fleet import Fleet  # noqa: E402  pylint: disable=wrong-import-position
from sgtest.escapees import start_escapees  # noqa: E402  pylint: disable=wrong-import-position

HOSTS = 4
FLEET_CMD = os.path.join(HERE, 'fleet', 'fleet')


def say(text):
    print('\n\033[1m==> %s\033[0m' % text, flush=True)


def playbook(fleet, name, *extra):
    argv = [os.path.join(REPO, '.venv', 'bin', 'ansible-playbook'), '-i', fleet.inventory_path,
            'sessionguard.mosh.%s' % name] + list(extra)
    print('$ ' + ' '.join(argv[1:]), flush=True)
    return subprocess.run(argv, env=ansible_env(), check=False).returncode


def main():
    fleet = Fleet(kind='cli')
    if fleet.hosts or os.path.exists(fleet.state_dir):
        say('Tearing down the fleet of an earlier demo')
        subprocess.run([FLEET_CMD, 'down'], check=True)
        fleet = Fleet(kind='cli')

    say('Bringing up a fleet of %d hosts (Linux namespaces, each with its own sshd on 127.0.0.N:22)' % HOSTS)
    t0 = time.monotonic()
    fleet.up(HOSTS)
    for h in fleet.hosts:
        print('  %s  %s  python=%s psutil=%s' % (h.name, h.address, h.profile.python,
                                                 'yes' if h.profile.psutil else 'no'))
    print('  up in %.1fs; inventory: %s' % (time.monotonic() - t0, fleet.inventory_path))

    say('alice and bob log in with mosh on every host; bob leaves a nohup job, a setsid daemon and a tmux server')
    alice, bob = fleet.create_user('alice'), fleet.create_user('bob')
    sessions = {}
    for h in fleet.hosts:
        sessions[('alice', h.name)] = fleet.mosh(alice, h)
        s = sessions[('bob', h.name)] = fleet.mosh(bob, h)
        start_escapees(s, ('nohup', 'setsid', 'tmux'))
        print('  %s: alice mosh-server pid %s, bob mosh-server pid %s (+ %d other processes of bob)'
              % (h.name, sessions[('alice', h.name)].server.pid, s.server.pid, len(bob.on(h).processes()) - 1))

    say('Audit: who is connected where (ansible-playbook sessionguard.mosh.audit), with the fleet report')
    report_dir = tempfile.mkdtemp(prefix='sessionguard-report-')
    playbook(fleet, 'audit', '-e', json.dumps({'audit_users': ['alice', 'bob'], 'audit_include_ssh': False,
                                               'audit_report_dir': report_dir}))
    print('  fleet report: %s/index.html (also sessions.json, sessions.csv)' % report_dir)

    say('Revoke bob across the fleet (ansible-playbook sessionguard.mosh.revoke)')
    rc = playbook(fleet, 'revoke', '-e', '{"revoke_users": ["bob"], "revoke_grace_period": 2, '
                  '"revoke_reason": "DEMO-1 laptop stolen", "revoke_notice": "Your access has been revoked."}')

    say('The hash-chained revocation log on the controller (ansible-playbook sessionguard.mosh.verify_log)')
    # The demo inventory keeps the log in the fleet's state directory (sessionguard_log_path on the fleet's hosts;
    # the verifier runs on localhost, so it is named here).
    verified = playbook(fleet, 'verify_log', '-e', json.dumps(
        {'sessionguard_log_path': os.path.join(fleet.state_dir, 'log', 'revocations.jsonl')}))

    say('What happened')
    print('  %-9s %-6s %-50s %s' % ('host', 'user', 'mosh client on the laptop', 'processes on the host'))
    ok = rc == 0 and verified == 0
    for h in fleet.hosts:
        for name, user in (('alice', alice), ('bob', bob)):
            s = sessions[(name, h.name)]
            if name == 'bob':
                status = s.wait_client_exit()
                said = '[mosh is exiting.]' in s.screen(history=True)
                client = 'exited with status %s%s' % (status, ', printed [mosh is exiting.]' if said else '')
                ok = ok and status == 0 and not user.on(h).processes()
            else:
                client = 'still running' if s.client_running() else 'NOT RUNNING'
                ok = ok and s.client_running()
            print('  %-9s %-6s %-50s %d' % (h.name, name, client, len(user.on(h).processes())))
    print()
    print('bob is cut off on every host and nothing of his survived; alice was not touched.' if ok
          else 'SOMETHING IS WRONG: see above.')
    print('Explore: %s status; %s run sghost01 -- ps -ef; ansible -i %s fleet -m ansible.builtin.ping'
          % (FLEET_CMD, FLEET_CMD, fleet.inventory_path))
    print('Tear down: %s down' % FLEET_CMD)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
