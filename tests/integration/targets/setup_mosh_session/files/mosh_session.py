# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live mosh sessions on this host for the integration targets, and what the targets check them with.

Standard library only: the setup target copies this file and nodeproc.py (processes, signals, utmp) to
the managed node and runs it there with the node's Python, as root. Every command prints one JSON document.

  sshd STATE_DIR                      start a private sshd on 127.0.0.1 (key logins, UsePAM yes)
  mosh STATE_DIR NAME USER KEY PORT [--escapees KIND,...]
                                      log USER in with the real ``mosh`` client (running in a private
                                      tmux, which gives it a terminal), type the escapees into the
                                      session's shell, wait until all of it runs
  procs UID...                        the live (non-zombie) processes of each UID
  client STATE_DIR NAME [--wait-exit SECONDS]
                                      whether the mosh client of session NAME runs, its exit status, screen
  stop STATE_DIR                      stop the client tmux servers and the sshd started under STATE_DIR
  kill-uids UID...                    SIGKILL every process of each UID and wait until none is left
  retire-utmp USER...                 mark the users' utmp records dead, as logout(3) does

Why through sshd: Debian's sshd PAM stack runs pam_loginuid, which gives the login a kernel audit
session id (/proc/PID/sessionid). Every process started in the session inherits it across fork,
setsid and daemonizing; that id is what ties a nohup job, a setsid daemon or a tmux server to the
mosh session after the process tree no longer does. A session begun with su or runuser has none.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

from nodeproc import (SetupError, brief, client_source_address, descendants, kill_and_wait, kill_uids, live_procs, proc,
                      procs_of, retire_utmp, tty_of, wait_for)

ADDRESS = '127.0.0.1'
PORTS = range(2400, 2500)  # clear of the pytest live harness's sshd ports (2222-2299)
SSHD = '/usr/sbin/sshd'
SLEEP = '100000'
ENV = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME': '/root',
       'LANG': 'C.UTF-8'}  # mosh refuses to start without a UTF-8 locale
TMUX_CONF = 'set -g remain-on-exit on\nset -g status off\nset -g history-limit 5000\n'
PROMPT_RE = re.compile(r'[$#] *$', re.M)


# ---------------------------------------------------------------------------------------- sshd
def answer(port):
    """The first bytes a server on ``port`` sends (an SSH server: its b'SSH-' banner), b'' from a silent
    one, or None when nothing listens there."""
    try:
        with socket.create_connection((ADDRESS, port), timeout=1) as conn:
            conn.settimeout(2)
            try:
                return conn.recv(64)
            except socket.timeout:
                return b''
    except OSError:
        return None


def read_pid(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def sshd(state_dir):
    os.makedirs('/run/sshd', mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    if not os.path.exists('/run/utmp'):  # a booted Debian has it; mosh-server records its client there
        os.close(os.open('/run/utmp', os.O_WRONLY | os.O_CREAT, 0o664))
        subprocess.check_call(['chown', 'root:utmp', '/run/utmp'])
    key = os.path.join(state_dir, 'ssh_host_ed25519_key')
    if not os.path.exists(key):
        subprocess.check_call(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', key])
    config, pid_file, log = (os.path.join(state_dir, n) for n in ('sshd_config', 'sshd.pid', 'sshd.log'))
    for port in PORTS:
        if answer(port) is not None:
            continue
        with open(config, 'w') as fh:
            fh.write('\n'.join([
                'Port %d' % port, 'ListenAddress %s' % ADDRESS, 'HostKey %s' % key, 'PidFile %s' % pid_file,
                'UsePAM yes', 'PubkeyAuthentication yes', 'PasswordAuthentication no',
                'KbdInteractiveAuthentication no', 'PermitRootLogin no', 'AuthorizedKeysFile .ssh/authorized_keys',
                'UseDNS no', 'PrintMotd no', 'PrintLastLog no', 'AcceptEnv LANG LC_*', 'LogLevel VERBOSE', '']))
        # Without -D sshd daemonizes; it writes its PID file once it listens.
        subprocess.check_call([SSHD, '-f', config, '-E', log], env=ENV, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: read_pid(pid_file) and (answer(port) or b'').startswith(b'SSH-'), 10, 'sshd on port %d' % port)
        except SetupError:
            continue  # lost a race for the port; the daemon, if any, exits on its failed bind
        return {'address': ADDRESS, 'port': port, 'pid': read_pid(pid_file)}
    raise SetupError('no free port for sshd in %d-%d' % (PORTS[0], PORTS[-1]))


# ---------------------------------------------------------------------------------------- tmux
def tmux(socket_path, *args):
    return subprocess.run(['tmux', '-S', socket_path, '-f', socket_path + '.conf'] + list(args), env=ENV,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)


def screen(socket_path):
    return tmux(socket_path, 'capture-pane', '-p', '-J', '-S', '-', '-t', 'main').stdout


def type_line(socket_path, line):
    tmux(socket_path, 'send-keys', '-t', 'main', '-l', line)
    tmux(socket_path, 'send-keys', '-t', 'main', 'Enter')


# ---------------------------------------------------------------------------------------- mosh
def escapee_command(kind, marker):
    """The shell line a user would type to leave ``kind`` running; its process carries ``marker``."""
    quiet = '</dev/null >/dev/null 2>&1'
    if kind == 'nohup':
        return "nohup bash -c 'exec -a \"$0\" sleep %s' %s %s &" % (SLEEP, marker, quiet)
    if kind == 'setsid':
        return "setsid bash -c 'exec -a \"$0\" sleep %s' %s %s &" % (SLEEP, marker, quiet)
    if kind == 'tmux':  # the user's own tmux server, which outlives the pty it was started on
        return "tmux -L %s new-session -d 'exec -a %s-child sleep %s'" % (marker, marker, SLEEP)
    raise SetupError('unknown escapee kind %r' % kind)


def find_escapee(kind, marker, table):
    if kind == 'tmux':
        found = [p for p in table if p['comm'].startswith('tmux') and marker in p['argv']]
    else:
        marker = marker + '-child' if kind == 'tmux_child' else marker
        found = [p for p in table if p['comm'] == 'sleep' and p['argv'][:1] == [marker]]
    return found[0] if len(found) == 1 else None


def mosh(state_dir, name, user, key, port, escapees):
    pw = subprocess.run(['getent', 'passwd', user], capture_output=True, text=True, check=True).stdout.split(':')
    uid = int(pw[2])
    sock = os.path.join(state_dir, name + '.tmux')
    status = os.path.join(state_dir, name + '.status')
    script = os.path.join(state_dir, name + '.sh')
    ssh = ['ssh', '-F', 'none', '-p', str(port), '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none',
           '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
           '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10']
    with open(sock + '.conf', 'w') as fh:
        fh.write(TMUX_CONF)
    with open(script, 'w') as fh:  # the client; its exit status is kept for the targets
        fh.write('mosh --ssh=%s %s@%s\necho $? > %s.tmp && mv %s.tmp %s\n' % (
            shlex.quote(' '.join(shlex.quote(a) for a in ssh)), user, ADDRESS, status, status, status))
    cp = tmux(sock, 'new-session', '-d', '-s', 'main', '-x', '160', '-y', '50', 'sh ' + shlex.quote(script))
    if cp.returncode != 0:
        raise SetupError('tmux failed: %s' % cp.stderr)
    pane = int(tmux(sock, 'display-message', '-p', '-t', 'main', '#{pane_pid}').stdout)

    def diag():
        lines = [line for line in screen(sock).splitlines() if line.strip()]
        return 'mosh session %s of %s; screen:\n%s' % (name, user, '\n'.join(lines))

    def client():
        if os.path.exists(status):
            raise SetupError('mosh exited before connecting: ' + diag())
        found = [p for p in descendants(pane, live_procs()) if p['comm'] == 'mosh-client']
        # Once the wrapper has exec'ed it, mosh-client's last two arguments are the server's IP and UDP port.
        return found[0] if found and found[0]['argv'] and found[0]['argv'][-1].isdigit() else None

    def server_and_shell():
        mine = procs_of(uid)
        for p in mine:
            # The daemon, once its pty child has exec'ed the login shell (argv differs from the server's).
            kids = [c for c in mine if c['ppid'] == p['pid'] and c['argv'] != p['argv']]
            if p['comm'] == 'mosh-server' and kids:
                return p, kids[0]
        return None

    the_client = wait_for(client, 30, lambda: 'mosh-client; ' + diag())
    server, shell = wait_for(server_and_shell, 30, lambda: 'mosh-server and its shell; ' + diag())
    wait_for(lambda: PROMPT_RE.search(screen(sock)), 30, lambda: 'the shell prompt; ' + diag())

    suffix = '%s-%d' % (name, server['pid'])
    markers = {kind: 'sgit-%s-%s' % (kind, suffix) for kind in escapees}
    for kind in escapees:
        type_line(sock, escapee_command(kind, markers[kind]))
    wanted = [(k, markers[k]) for k in escapees] + ([('tmux_child', markers['tmux'])] if 'tmux' in escapees else [])

    def all_escapees():
        table = procs_of(uid)
        found = dict((kind, find_escapee(kind, marker, table)) for kind, marker in wanted)
        return found if all(found.values()) else None

    found = wait_for(all_escapees, 20, lambda: 'escapees %s; %s' % (', '.join(escapees), diag()))

    # Settled: the ssh login that launched mosh-server has ended, and nothing appeared or went for 0.5 s.
    last = [None]

    def settled():
        now = [brief(p) for p in procs_of(uid)]
        done = now == last[0] and not any(p['comm'].startswith('sshd') for p in now)
        last[0] = now
        time.sleep(0.5)
        return now if done else None

    processes = wait_for(settled, 15, 'the processes of %s to settle' % user)
    with open('/proc/%d/sessionid' % server['pid']) as fh:
        sessionid = int(fh.read())
    return {
        'name': name, 'user': user, 'uid': uid, 'tmux_socket': sock, 'sshd_port': port,
        'client': dict(brief(the_client), server_address=the_client['argv'][-2],
                       udp_port=int(the_client['argv'][-1]), address=client_source_address(the_client['pid'], the_client['argv'][-2])),
        'server': dict(brief(server), exe=os.readlink('/proc/%d/exe' % server['pid']), sessionid=sessionid),
        'shell': brief(shell), 'tty': tty_of(shell['pid']),
        'escapees': dict((kind, brief(p)) for kind, p in found.items()),
        'processes': processes,
    }


def client_state(state_dir, name, wait_exit):
    sock = os.path.join(state_dir, name + '.tmux')
    status = os.path.join(state_dir, name + '.status')
    if wait_exit:
        try:
            wait_for(lambda: os.path.exists(status), wait_exit, 'the mosh client to exit')
        except SetupError:
            pass  # reported as still running
    exit_status = read_pid(status)
    return {'running': exit_status is None, 'exit_status': exit_status, 'screen': screen(sock)}


# ---------------------------------------------------------------------------------------- cleanup
def stop(state_dir):
    """Stop what ``sshd`` and ``mosh`` started under ``state_dir``, by PID and socket, never by name."""
    stopped = []
    for sock in sorted(glob.glob(os.path.join(state_dir, '*.tmux'))):
        cp = tmux(sock, 'display-message', '-p', '-t', 'main', '#{pid}')
        if cp.returncode == 0:
            server = proc(int(cp.stdout))
            doomed = [server] + descendants(server['pid'], live_procs()) if server else []
            tmux(sock, 'kill-server')  # graceful, so tmux removes its panes' utmp records
            kill_and_wait(doomed, signal.SIGKILL, 5)
            stopped.append(sock)
    pid = read_pid(os.path.join(state_dir, 'sshd.pid'))
    listener = proc(pid) if pid else None
    if listener is not None and listener['comm'] == 'sshd':
        doomed = descendants(pid, live_procs()) + [listener]
        kill_and_wait(doomed, signal.SIGTERM, 5)
        kill_and_wait(doomed, signal.SIGKILL, 5)
        stopped.append('sshd %d' % pid)
    return {'stopped': stopped}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('sshd').add_argument('state_dir')
    p = sub.add_parser('mosh')
    for arg in ('state_dir', 'name', 'user', 'key'):
        p.add_argument(arg)
    p.add_argument('port', type=int)
    p.add_argument('--escapees', default='', type=lambda s: [k for k in s.split(',') if k])
    sub.add_parser('procs').add_argument('uids', nargs='+', type=int)
    p = sub.add_parser('client')
    p.add_argument('state_dir')
    p.add_argument('name')
    p.add_argument('--wait-exit', type=float, default=0)
    sub.add_parser('stop').add_argument('state_dir')
    sub.add_parser('kill-uids').add_argument('uids', nargs='+', type=int)
    sub.add_parser('retire-utmp').add_argument('users', nargs='+')
    a = parser.parse_args()
    try:
        if a.command == 'sshd':
            out = sshd(a.state_dir)
        elif a.command == 'mosh':
            out = mosh(a.state_dir, a.name, a.user, a.key, a.port, a.escapees)
        elif a.command == 'procs':
            out = dict((str(uid), [brief(p) for p in procs_of(uid)]) for uid in a.uids)
        elif a.command == 'client':
            out = client_state(a.state_dir, a.name, a.wait_exit)
        elif a.command == 'stop':
            out = stop(a.state_dir)
        elif a.command == 'kill-uids':
            out = kill_uids(a.uids)
        else:
            out = retire_utmp(a.users)
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        sys.stderr.write('%s: %s\n' % (a.command, exc))
        sys.exit(1)
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
