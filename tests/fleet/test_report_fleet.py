"""The fleet report (audit.yml) and the reconcile (reconcile.yml) on a fleet, through ansible-playbook over SSH.

The HTML report is opened in Debian's chromium, headless, driven by Playwright (which cannot download its own
browsers here, so it is pointed at /usr/bin/chromium). The reconcile runs against a real LDAP directory (slapd,
and nslcd on every host) holding the allowed group; ``ldapmodify`` is the only way the tests change it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time

import pytest

from sgtest import procfs, utmp
from sgtest.fleet import ldap
from sgtest.lockout import shadow_field
from sgtest.mosh import spoofed_server
from sgtest.waiting import wait_for
from test_lockout_fleet import deny_list, directory, directory_user, logins, run_playbook  # noqa: F401  pylint: disable=unused-import

pytestmark = pytest.mark.fleet

SCRIPT_PAYLOAD = '<script>window.sgPwned="script"</script>'
# A process name that a spreadsheet would run as a formula, carrying the script tag too.
FORMULA_PAYLOAD = '=HYPERLINK("http://203.0.113.9/x","open")' + SCRIPT_PAYLOAD
IMG_PAYLOAD = '<img/src=x/onerror=window.sgPwned="img">'
CHROMIUM = '/usr/bin/chromium'


def audit(fleet, report_dir, **extra):
    run = run_playbook(fleet, 'audit', dict({'audit_report_dir': report_dir}, **extra))
    with open(os.path.join(report_dir, 'sessions.json')) as f:
        return run, json.load(f)


def browse(path, actions):
    """Open ``path`` in headless chromium; ``actions(page)`` runs with it. Returns the console errors and page errors."""
    from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=['--no-sandbox'])
        try:
            page = browser.new_page()
            page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
            page.on('pageerror', lambda e: errors.append(str(e)))
            page.goto('file://' + path)
            page.wait_for_load_state('load')
            actions(page)
        finally:
            browser.close()
    return errors


def column(page, table, col):
    return page.eval_on_selector_all(
        '#%s tbody tr:not([hidden])' % table,
        '(rows, i) => rows.map(r => r.cells[i].textContent)',
        page.eval_on_selector_all('#%s thead th' % table, '(hs, c) => hs.findIndex(h => h.dataset.col === c)', col))


def csv_value(v):
    """A JSON value as the CSV writes it."""
    if v is None:
        return ''
    if isinstance(v, bool):
        return 'true' if v else 'false'
    return str(v)


def test_the_report_shows_every_session_safely_sorts_filters_and_has_the_login_history(
        fleet, sg_scope, user_factory, mosh_session_factory, ssh_session_factory, tmp_path):
    first, second = fleet.hosts[0], fleet.hosts[1]
    user = user_factory()
    other = user_factory()
    live = [mosh_session_factory(user, h) for h in fleet.hosts] + [mosh_session_factory(other, h) for h in fleet.hosts]
    live.append(ssh_session_factory(other, second))
    # A hostile user: a server whose argv[0] is a formula and a script tag, and the utmp host text it writes for itself.
    hostile = user_factory(hosts=[first])
    evil = mosh_session_factory(hostile, first, server=spoofed_server(hostile.on(first), argv0=FORMULA_PAYLOAD))
    assert utmp.rewrite_host(evil.server_pid, '%s via mosh [%d]' % (IMG_PAYLOAD, evil.server_pid),
                             first.utmp_path) == 1
    # History: a mosh session and an SSH login, both started and ended here.
    started = time.time()
    gone = mosh_session_factory(other, second)
    gone_pid = gone.server_pid
    gone.send('exit')
    assert gone.wait_client_exit() == 0
    wait_for(lambda: not os.path.exists(os.path.join(second.proc_root, str(gone_pid))), 15, 'the mosh-server to exit')
    login = ssh_session_factory(other, second)
    login.send('exit')
    login.wait_client_exit()
    ended = time.time()
    report_dir = str(tmp_path / 'report')

    run, report = audit(fleet, report_dir)

    assert run.rc == 0, run.describe()
    # The play output ends with the short table.
    tail = run.stdout[run.stdout.rindex('Show the fleet at a glance'):]
    for h in fleet.hosts:
        assert '"%s ' % h.name in tail
    assert '%d host(s) audited, 0 unreachable' % len(fleet.hosts) in tail
    # JSON: every live session of the fleet, with its host.
    mosh_rows = [s for s in report['sessions'] if s['kind'] == 'mosh']
    want = sorted((s.user.host.name, s.server_pid) for s in live[:-1] + [evil])
    got = sorted((s['host'], s['leader_pid']) for s in mosh_rows if s['user'] in (user.name, other.name, hostile.name))
    assert got == want
    ssh_rows = [s for s in report['sessions'] if s['kind'] == 'ssh' and s['user'] == other.name]
    assert [s['host'] for s in ssh_rows] == [second.name]
    assert report['unreachable'] == [] and report['summary']['hosts_audited'] == len(fleet.hosts)
    (evil_row,) = [s for s in report['sessions'] if s['user'] == hostile.name]
    assert evil_row['command'].startswith(FORMULA_PAYLOAD) and evil_row['client_ip'] == IMG_PAYLOAD
    assert evil_row['suspicious']

    # History: the ended mosh session with client IP, start and duration; the SSH login.
    hist = [e for e in report['history'] if e['host'] == second.name and e['user'] == other.name]
    (m,) = [e for e in hist if e['kind'] == 'mosh' and e['pid'] == gone_pid]
    assert m['client_ip'] == '127.0.0.1' and m['end'] is not None and m['ended_by'] == 'logout'
    start = time.mktime(time.strptime(m['start'], '%Y-%m-%dT%H:%M:%SZ')) - time.timezone
    assert started - 60 <= start <= ended and 0 <= m['duration_seconds'] <= ended - started + 2
    ssh_logins = [e for e in hist if e['kind'] == 'ssh' and e['end'] is not None]
    assert ssh_logins and ssh_logins[0]['client_ip'] == '127.0.0.1', hist
    assert all(c['covers_from'] for c in report['history_coverage'])

    # CSV: parses back into exactly the JSON's sessions once the neutralizing apostrophe is removed.
    with open(os.path.join(report_dir, 'sessions.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert not any(v.startswith(('=', '+', '-', '@')) for v in row.values()), row
    assert [r['command'] for r in rows if r['user'] == hostile.name and r['record'] == 'session'] == ["'" + evil_row['command']]
    sessions_csv = [dict((k, v[1:] if v.startswith("'") else v) for k, v in row.items() if k != 'record')
                    for row in rows if row['record'] == 'session']
    fields = list(sessions_csv[0])
    assert sessions_csv == [dict((k, csv_value(s.get(k))) for k in fields) for s in report['sessions']]
    assert fields[:6] == ['host', 'user', 'uid', 'kind', 'state', 'client_ip']

    # HTML in a real browser.
    checks = {}

    def actions(page):
        checks['rows'] = page.eval_on_selector_all('#sessions tbody tr', 'rs => rs.length')
        checks['pids'] = sorted(zip(column(page, 'sessions', 'host'), column(page, 'sessions', 'leader_pid')))
        checks['elements'] = page.eval_on_selector_all('td script, td img, img', 'es => es.length')
        checks['pwned'] = page.evaluate('() => window.sgPwned === undefined ? null : String(window.sgPwned)')
        checks['evil_text'] = [t for t in column(page, 'sessions', 'command') if 'sgPwned' in t]
        checks['evil_ip'] = [t for t in column(page, 'sessions', 'client_ip') if 'sgPwned' in t]
        page.click('#sessions th[data-col="leader_pid"]')
        checks['asc'] = [int(v) for v in column(page, 'sessions', 'leader_pid')]
        page.click('#sessions th[data-col="leader_pid"]')
        checks['desc'] = [int(v) for v in column(page, 'sessions', 'leader_pid')]
        page.click('#sessions th[data-col="user"]')
        checks['by_user'] = column(page, 'sessions', 'user')
        page.fill('#filter-user', other.name)
        checks['filtered'] = column(page, 'sessions', 'user')
        checks['count'] = page.text_content('#sessions-count')
        checks['history_users'] = column(page, 'history', 'user')

    errors = browse(os.path.join(report_dir, 'index.html'), actions)

    assert errors == []
    assert checks['rows'] == len(report['sessions'])
    assert checks['pids'] == sorted((s['host'], str(s['leader_pid'])) for s in report['sessions'])
    assert checks['elements'] == 0 and checks['pwned'] is None
    assert checks['evil_text'] == [evil_row['command']]
    assert checks['evil_ip'] == [IMG_PAYLOAD]
    assert checks['asc'] == sorted(checks['asc']) and checks['desc'] == sorted(checks['asc'], reverse=True)
    assert checks['asc'] != checks['desc']
    assert checks['by_user'] == sorted(checks['by_user'], key=str.lower)
    n_other = sum(1 for s in report['sessions'] if s['user'] == other.name)
    assert checks['filtered'] == [other.name] * n_other and checks['count'] == str(n_other) and n_other > 1
    assert other.name in checks['history_users']


def test_an_unreachable_host_is_named_in_all_three_files(
        fleet, sg_scope, user_factory, mosh_session_factory, tmp_path):
    down = fleet.hosts[-1]
    user = user_factory()
    mosh_session_factory(user, fleet.hosts[0])
    down.sshd.stop()
    conns = [p for p in procfs.iter_procs(down.proc_root) if p.comm.startswith('sshd')]
    procfs.kill_procs(conns)
    procfs.wait_gone(conns, proc_root=down.proc_root)
    report_dir = str(tmp_path / 'report')
    try:
        run, report = audit(fleet, report_dir)
    finally:
        down.sshd.start()
    assert run.rc != 0, run.describe()
    assert [(d['host'], d['status']) for d in report['unreachable']] == [(down.name, 'unreachable')]
    assert report['summary']['hosts_unreachable'] == 1
    assert report['summary']['hosts_audited'] == len(fleet.hosts) - 1
    assert any(s['user'] == user.name for s in report['sessions'])
    with open(os.path.join(report_dir, 'sessions.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['host'], r['state']) for r in rows if r['record'] == 'unreachable'] == [(down.name, 'unreachable')]
    with open(os.path.join(report_dir, 'index.html')) as f:
        page = f.read()
    assert '<li><b>%s</b>: unreachable' % down.name in page
    assert '"%s  UNREACHABLE' % down.name in run.stdout


# --------------------------------------------------------------------------- reconcile


def ldapmodify(server, ldif):
    subprocess.run(['ldapmodify', '-x', '-H', server.uri, '-D', ldap.ADMIN, '-w', ldap.ADMIN_PW], input=ldif,
                   text=True, capture_output=True, check=True)


def reconcile(fleet, group, **extra):
    return run_playbook(fleet, 'reconcile', dict({'reconcile_allowed_groups': [group]}, **extra))


def plan_lines(run):
    """host -> its line in the reconcile listing."""
    out = {}
    for line in run.stdout.splitlines():
        line = line.strip().strip('",')
        if line.startswith('sghost') and ': ' in line:
            host, rest = line.split(': ', 1)
            out.setdefault(host, rest)
    return out


def listed(line):
    """(users to revoke, users skipped) in one host's listing line."""
    head = line.split('; ')[0]
    revoke = re.findall(r'(?:^(?:would )?revoke |\), )([^\s(),;]+) \(', head)
    return sorted(revoke), sorted(re.findall(r'skipped ((?:UID )?[^\s(]+) \(', line))


def local_group(fleet, name, members_of):
    """A local group of that name on every host, listing ``members_of(host)``."""
    for h in fleet.hosts:
        h.run(['groupadd', name])
        h.run(['gpasswd', '-M', ','.join(members_of(h)), name])


def during_outage(fleet, directory, lookup, run):
    """``run()`` with the directory stopped, once ``getent *lookup`` stops resolving on the hosts; then resume it."""
    directory.stop()
    try:
        wait_for(lambda: fleet.hosts[0].run(['getent'] + lookup, check=False).returncode != 0, 30,
                 'getent %s to stop resolving' % ' '.join(lookup))
        return run()
    finally:
        directory.resume()


def test_reconcile_revokes_who_the_directory_no_longer_allows_and_nobody_else(
        logins, directory, sg_scope, user_factory, mosh_session_factory, bystander_factory):  # noqa: F811
    fleet = logins
    stays = directory_user(fleet, directory, sg_scope.dir, key_in_home=True)
    leaves = directory_user(fleet, directory, sg_scope.dir, key_in_home=True)
    stays_name, leaves_name = stays[fleet.hosts[0].name].name, leaves[fleet.hosts[0].name].name
    local = user_factory()
    expired_host = fleet.hosts[1]
    expired = user_factory(hosts=[expired_host])
    tag = os.getpid() % 3000
    group, empty, here = 'sgallow%d' % tag, 'sgempty%d' % tag, 'sglocal%d' % tag
    bystanders = dict((h.name, bystander_factory(h)) for h in fleet.hosts)
    directory.add_group(group, 46000 + tag, [stays_name, leaves_name, local.name, expired.name]
                        + [b.user.name for b in bystanders.values()])
    directory.add_group(empty, 43000 + tag, [])
    local_group(fleet, here, lambda h: [local.name, bystanders[h.name].user.name]
                + ([expired.name] if h is expired_host else []))
    try:
        sessions = {}
        for h in fleet.hosts:
            sessions[h.name] = {'stays': mosh_session_factory(stays[h.name]), 'leaves': mosh_session_factory(leaves[h.name]),
                                'local': mosh_session_factory(local, h)}
        old_expiry = mosh_session_factory(expired, expired_host)
        expiry_field = shadow_field(expired_host, expired.name)

        def untouched():
            for h in fleet.hosts:
                assert deny_list(h) == [], h.name
                for s in sessions[h.name].values():
                    assert s.client_running(), (h.name, s)
            assert old_expiry.client_running() and shadow_field(expired_host, expired.name) == expiry_field
            for b in bystanders.values():
                b.assert_untouched()

        # Before any change in the directory, everyone is allowed.
        clean = reconcile(fleet, group, reconcile_dry_run=True)
        assert clean.rc == 0, clean.describe()
        assert all(plan_lines(clean)[h.name].startswith('nothing to revoke') for h in fleet.hosts), plan_lines(clean)

        # An empty group is an error, not "everyone is outside".
        nobody = reconcile(fleet, empty)
        assert nobody.rc != 0 and "group '%s' (gid %d) resolves with no members" % (empty, 43000 + tag) in nobody.stdout
        assert 'Close the door' not in nobody.stdout
        untouched()

        # A directory outage with a local allowed group: every directory user is a UID with no name, never revoked.
        outage = during_outage(fleet, directory, ['passwd', stays_name], lambda: reconcile(fleet, here))
        assert outage.rc == 0, outage.describe()
        for h in fleet.hosts:
            revoke, skipped = listed(plan_lines(outage)[h.name])
            assert revoke == [] and sorted(['UID %d' % stays[h.name].uid, 'UID %d' % leaves[h.name].uid]) == skipped, \
                plan_lines(outage)
        untouched()

        def directory_answers():
            for h in fleet.hosts:
                wait_for(lambda h=h: h.run(['getent', 'group', group], check=False).returncode == 0, 60,
                         'the directory to answer %s again' % h.name)

        directory_answers()
        ldapmodify(directory, 'dn: cn=%s,ou=groups,%s\nchangetype: modify\ndelete: memberUid\nmemberUid: %s\n'
                   % (group, ldap.SUFFIX, leaves_name))
        yesterday = time.strftime('%Y-%m-%d', time.gmtime(time.time() - 86400))
        expired_host.run(['chage', '-E', yesterday, expired.name])
        expiry_field = shadow_field(expired_host, expired.name)

        # Dry run: the same users listed, nothing changes.
        dry = reconcile(fleet, group, reconcile_dry_run=True)
        assert dry.rc == 0, dry.describe()
        lines = plan_lines(dry)
        for h in fleet.hosts:
            assert lines[h.name].startswith('would revoke '), lines
            assert listed(lines[h.name])[0] == sorted([leaves_name] + ([expired.name] if h is expired_host else [])), lines
            assert '%s (not in groups %s)' % (leaves_name, group) in lines[h.name], lines
        assert '%s (account expired on %s)' % (expired.name, yesterday) in lines[expired_host.name]
        assert '2 user(s) to revoke across the fleet' in dry.stdout
        assert 'Close the door' not in dry.stdout
        untouched()

        # A protected user is never listed, whatever the groups say.
        guarded = reconcile(fleet, group, reconcile_dry_run=True, sessionguard_protected_users=[leaves_name])
        assert guarded.rc == 0, guarded.describe()
        for h in fleet.hosts:
            assert listed(plan_lines(guarded)[h.name]) == (
                [expired.name] if h is expired_host else [], [leaves_name]), plan_lines(guarded)

        # More users than the limit: stops before anything.
        limited = reconcile(fleet, group, reconcile_max_users=1)
        assert limited.rc != 0, limited.describe()
        assert 'Refusing: 2 users would be revoked across the fleet' in limited.stdout
        assert 'Close the door' not in limited.stdout
        untouched()

        # The directory stopped: the allowed group does not resolve, the run fails before revoking anyone.
        dark = during_outage(fleet, directory, ['group', group], lambda: reconcile(fleet, group))
        assert dark.rc != 0, dark.describe()
        assert "group '%s' does not resolve" % group in dark.stdout
        assert 'Close the door' not in dark.stdout
        directory_answers()
        untouched()

        # The real run.
        run = reconcile(fleet, group, revoke_grace_period=2)
        assert run.rc == 0, run.describe()
        for h in fleet.hosts:
            assert sessions[h.name]['leaves'].wait_client_exit() == 0, h.name
            assert leaves[h.name].processes() == [], h.name
            want = sorted([leaves_name] + ([expired.name] if h is expired_host else []))
            assert sorted(deny_list(h)) == want, h.name
            cp = h.sshd.run_as(leaves[h.name], 'echo got-in', check=False)
            assert cp.returncode == 255 and 'got-in' not in cp.stdout
            assert sessions[h.name]['stays'].client_running() and sessions[h.name]['local'].client_running(), h.name
            cp = h.sshd.run_as(stays[h.name], 'echo got-in', check=False)
            assert cp.returncode == 0 and 'got-in' in cp.stdout
        assert old_expiry.wait_client_exit() == 0 and expired.on(expired_host).processes() == []
        for b in bystanders.values():
            b.assert_untouched()
    finally:
        names = [leaves_name, expired.name]
        for h in fleet.hosts:
            if any(n in deny_list(h) for n in names):
                run_playbook(fleet, 'restore', {'restore_users': [n for n in names if n in deny_list(h)],
                                                'restore_force': True, 'sessionguard_hosts': h.name})
            h.run(['groupdel', here], check=False)
            for users in (stays, leaves):
                u = users[h.name]
                h.kill_all_as(u.uid, u.gid)
                h.run(['rm', '-rf', '--one-file-system', u.home])
