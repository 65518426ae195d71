# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fleet session report: one audit of many hosts as JSON, CSV and a self-contained HTML page.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Runs on the controller. Every value that comes from a host may be hostile (a process name, a utmp host chosen
by the user whose session it describes): the CSV never lets a value become a formula, and the HTML escapes
every value and runs no script but its own (a Content-Security-Policy pins the page's one script by hash).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import tempfile
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils._text import escape

SESSION_FIELDS = ('host', 'user', 'uid', 'kind', 'state', 'client_ip', 'client_ip_source', 'udp_port', 'age_seconds',
                  'detached_seconds', 'process_count', 'suspicious', 'renamed', 'copied', 'exe_deleted',
                  'exe_unreadable', 'command', 'started', 'leader_pid', 'tty')
LOGIN_FIELDS = ('host', 'user', 'kind', 'client_ip', 'client_ips', 'tty', 'pid', 'start', 'end', 'duration_seconds',
                'ended_by')
# One CSV for spreadsheets: the first column says what a row is, so each table is one filter away.
CSV_FIELDS = ('record',) + SESSION_FIELDS + ('end', 'duration_seconds', 'ended_by', 'error')
# A spreadsheet takes a cell starting with one of these for a formula (tab and CR too, after trimming).
# A leading apostrophe marks the cell as text; a value that starts with an apostrophe gets one too, so removing
# exactly one leading apostrophe always gives the value back.
_FORMULA_START = ('=', '+', '-', '@', '\t', '\r', "'")
WTMP_NOTE = ('Login history comes from each host\'s wtmp, which is rotated (monthly on Debian): it reaches back only '
             'as far as "covers from" says. mosh records are written by the user\'s own mosh-server, so their '
             'client addresses are hints.')
CLIENT_NOTE = ('Client addresses of mosh sessions come from utmp, which mosh-server writes and the user can '
               'influence: they are hints.')


def _iso(t):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))


def _session_row(host, s):
    row = dict((k, s.get(k)) for k in SESSION_FIELDS)
    row['host'] = host
    row['command'] = s.get('cmdline')
    for flag in ('suspicious', 'renamed', 'copied', 'exe_deleted', 'exe_unreadable'):
        row[flag] = bool(s.get(flag, False))
    if s.get('kind') == 'ssh' and row['state'] is None:
        row['state'] = 'attached'
    if s.get('kind') == 'ssh' and row['client_ip'] is not None:
        row['client_ip_source'] = 'socket'
    return row


def build(hosts, history_days=0, now=None):
    """The report as data. ``hosts``: [{name, status ('audited', 'unreachable' or 'failed'), error, facts}],
    where ``facts`` holds what sessionguard.mosh.session_facts set on that host."""
    now = time.time() if now is None else now
    sessions, orphans, lockouts, down, logins, coverage = [], [], [], [], [], []
    for h in sorted(hosts, key=lambda x: x['name']):
        name = h['name']
        if h['status'] != 'audited':
            down.append({'host': name, 'status': h['status'], 'error': escape(str(h.get('error') or 'no answer'))})
            continue
        facts = h.get('facts') or {}
        sessions.extend(_session_row(name, s) for s in facts.get('sessionguard_sessions') or [])
        for o in facts.get('sessionguard_orphans') or []:
            orphans.append({'host': name, 'user': o.get('user'), 'uid': o.get('uid'),
                            'process_count': o.get('process_count')})
        for lk in facts.get('sessionguard_lockouts') or []:
            lockouts.append({'host': name, 'user': lk.get('user'), 'uid': lk.get('uid'),
                             'locked_at': lk.get('locked_at'), 'reason': lk.get('reason')})
        hist = facts.get('sessionguard_history')
        if hist:
            coverage.append({'host': name, 'since': hist.get('since'), 'covers_from': hist.get('covers_from'),
                             'wtmp': hist.get('wtmp'), 'logins_total': hist.get('logins_total'),
                             'logins_truncated': hist.get('logins_truncated'), 'error': hist.get('error')})
            for e in hist.get('logins') or []:
                row = dict((k, e.get(k)) for k in LOGIN_FIELDS)
                row['host'] = name
                logins.append(row)
    audited = len(hosts) - len(down)
    summary = {
        'hosts': len(hosts),
        'hosts_audited': audited,
        'hosts_unreachable': sum(1 for d in down if d['status'] == 'unreachable'),
        'hosts_failed': sum(1 for d in down if d['status'] == 'failed'),
        'users': len(set(s['user'] if s['user'] is not None else '#%s' % s['uid'] for s in sessions)),
        'sessions': len(sessions),
        'attached': sum(1 for s in sessions if s['state'] == 'attached'),
        'detached': sum(1 for s in sessions if s['state'] == 'detached'),
        'orphans': sum(o['process_count'] or 0 for o in orphans),
        'suspicious': sum(1 for s in sessions if s['suspicious']),
        'logins': len(logins),
    }
    return {'generated': _iso(now), 'history_days': history_days, 'summary': summary,
            'hosts_audited': sorted(h['name'] for h in hosts if h['status'] == 'audited'), 'sessions': sessions,
            'unreachable': down, 'orphans': orphans, 'lockouts': lockouts, 'history': logins,
            'history_coverage': coverage, 'notes': [CLIENT_NOTE, WTMP_NOTE] if history_days else [CLIENT_NOTE]}


def to_json(report):
    return json.dumps(report, indent=1, sort_keys=True, ensure_ascii=True) + '\n'


def cell(value):
    """A CSV cell: empty for null, true/false, numbers as digits, text neutralized against formulas."""
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        value = ' '.join(str(v) for v in value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(report):
    out = io.StringIO()
    w = csv.writer(out, lineterminator='\r\n')
    w.writerow(CSV_FIELDS)
    for s in report['sessions']:
        w.writerow(['session'] + [cell(s.get(k)) for k in CSV_FIELDS[1:]])
    for d in report['unreachable']:
        w.writerow(['unreachable' if d['status'] == 'unreachable' else 'not audited']
                   + [cell(d['host'] if k == 'host' else d['status'] if k == 'state' else d['error'] if k == 'error'
                           else None) for k in CSV_FIELDS[1:]])
    for e in report['history']:
        mapped = dict(e, leader_pid=e['pid'], started=e['start'])
        w.writerow(['login'] + [cell(mapped.get(k)) for k in CSV_FIELDS[1:]])
    return out.getvalue()


def h(value):
    """HTML text for any value: every character that means something in HTML escaped, in text and attributes."""
    if value is None:
        return ''
    if isinstance(value, bool):
        value = 'yes' if value else ''
    return (str(value).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace('"', '&quot;')
            .replace("'", '&#39;').replace('`', '&#96;'))


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.cards{display:flex;flex-wrap:wrap;gap:.6em}.card{border:1px solid #ccc;border-radius:6px;padding:.5em .8em}
.card b{display:block;font-size:1.4em}.bad{color:#a00}
table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left}
th{background:#f2f2f2;cursor:pointer;user-select:none}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td{white-space:pre-wrap;word-break:break-all;max-width:30em}
.filters input{margin-right:.8em}.note{color:#555;font-size:.9em}
"""

# Sorts a table by the clicked header (numbers as numbers) and filters rows by host, user and state. It reads and
# moves existing cells only: no value is ever parsed as HTML.
_JS = """
(function () {
  'use strict';
  function key(td) {
    var v = td.getAttribute('data-v');
    if (v === null) { v = td.textContent; }
    var n = Number(v);
    return (v !== '' && !isNaN(n)) ? [0, n, ''] : [1, 0, v.toLowerCase()];
  }
  function cmp(a, b) {
    if (a[0] !== b[0]) { return a[0] - b[0]; }
    if (a[1] !== b[1]) { return a[1] < b[1] ? -1 : 1; }
    return a[2] < b[2] ? -1 : (a[2] > b[2] ? 1 : 0);
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    var heads = table.querySelectorAll('thead th');
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (o) { o.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var c = cmp(key(r1.cells[col]), key(r2.cells[col]));
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  function filter() {
    var want = {};
    Array.prototype.forEach.call(document.querySelectorAll('.filters input'), function (i) {
      want[i.getAttribute('data-col')] = i.value.trim().toLowerCase();
    });
    Array.prototype.forEach.call(document.querySelectorAll('table.filterable'), function (table) {
      var cols = {};
      Array.prototype.forEach.call(table.querySelectorAll('thead th'), function (th, i) {
        cols[th.getAttribute('data-col')] = i;
      });
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        var ok = true;
        Object.keys(want).forEach(function (c) {
          if (want[c] && cols[c] !== undefined && r.cells[cols[c]].textContent.toLowerCase().indexOf(want[c]) < 0) {
            ok = false;
          }
        });
        r.hidden = !ok;
        if (ok) { shown += 1; }
      });
      var count = document.getElementById(table.id + '-count');
      if (count) { count.textContent = String(shown); }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll('.filters input'), function (i) {
    i.addEventListener('input', filter);
  });
}());
"""

_SESSION_HEADS = (('host', 'Host'), ('user', 'User'), ('kind', 'Kind'), ('state', 'State'), ('client_ip', 'Client IP'),
                  ('client_ip_source', 'IP source'), ('udp_port', 'UDP port'), ('age_seconds', 'Age (s)'),
                  ('detached_seconds', 'Detached (s)'), ('process_count', 'Tied processes'),
                  ('suspicious', 'Suspicious binary'), ('command', 'Command'), ('started', 'Started'),
                  ('leader_pid', 'PID'))
_LOGIN_HEADS = (('host', 'Host'), ('user', 'User'), ('kind', 'Kind'), ('client_ip', 'Client IP'),
                ('start', 'Start'), ('end', 'End'), ('duration_seconds', 'Duration (s)'), ('ended_by', 'Ended by'),
                ('tty', 'TTY'), ('pid', 'PID'))


def _flags(s):
    names = [f for f in ('renamed', 'copied', 'exe_deleted', 'exe_unreadable') if s.get(f)]
    return ', '.join(names) if names else ('yes' if s.get('suspicious') else '')


def _table(tid, heads, rows, value):
    out = ['<table id="%s" class="sortable filterable"><thead><tr>' % tid]
    out += ['<th data-col="%s" scope="col">%s</th>' % (h(col), h(label)) for col, label in heads]
    out.append('</tr></thead><tbody>')
    for r in rows:
        cells = []
        for col, _label in heads:
            v = value(r, col)
            raw = r.get(col)
            # Numbers sort by value; an empty cell sorts last.
            attr = ' data-v="%s"' % h(raw) if isinstance(raw, int) and not isinstance(raw, bool) else ''
            cells.append('<td%s>%s</td>' % (attr, h(v)))
        out.append('<tr>%s</tr>' % ''.join(cells))
    out.append('</tbody></table>')
    return '\n'.join(out)


def to_html(report):
    s = report['summary']
    script = _JS
    digest = base64.b64encode(hashlib.sha256(script.encode('utf-8')).digest()).decode('ascii')
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-%s'; img-src 'none'" % digest
    cards = [('Hosts audited', s['hosts_audited'], False), ('Hosts unreachable', s['hosts_unreachable'], True),
             ('Hosts failed', s['hosts_failed'], True), ('Users', s['users'], False),
             ('Sessions', s['sessions'], False), ('Attached', s['attached'], False),
             ('Detached', s['detached'], False), ('Orphan processes', s['orphans'], True),
             ('Suspicious binaries', s['suspicious'], True)]
    parts = [
        '<!DOCTYPE html>',
        '<html lang="en"><head><meta charset="utf-8">',
        # Our own constant (base64 and quotes only), in a double-quoted attribute.
        '<meta http-equiv="Content-Security-Policy" content="%s">' % csp,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<title>Fleet sessions %s</title>' % h(report['generated']),
        '<style>%s</style></head><body>' % _CSS,
        '<h1>Fleet sessions</h1>',
        '<p class="note">Generated %s by sessionguard.mosh.audit.</p>' % h(report['generated']),
        '<div class="cards" id="summary">',
    ]
    for label, n, alarm in cards:
        parts.append('<div class="card%s"><b>%s</b>%s</div>' % (' bad' if alarm and n else '', h(n), h(label)))
    parts.append('</div>')
    if report['unreachable']:
        parts.append('<h2>Hosts not audited</h2><ul id="unreachable">')
        parts += ['<li><b>%s</b>: %s - %s</li>' % (h(d['host']), h(d['status']), h(d['error']))
                  for d in report['unreachable']]
        parts.append('</ul>')
    parts.append('<h2>Live sessions (<span id="sessions-count">%d</span>)</h2>' % len(report['sessions']))
    parts.append('<div class="filters">'
                 '<label>Host <input type="search" data-col="host" id="filter-host"></label>'
                 '<label>User <input type="search" data-col="user" id="filter-user"></label>'
                 '<label>State <input type="search" data-col="state" id="filter-state"></label></div>')
    parts.append(_table('sessions', _SESSION_HEADS, report['sessions'],
                        lambda r, c: _flags(r) if c == 'suspicious' else r.get(c) if c != 'user' or r.get(c) is not None
                        else '#%s' % r.get('uid')))
    parts.append('<p class="note">%s</p>' % h(CLIENT_NOTE))
    if report['orphans']:
        parts.append('<h2>Orphan processes</h2>')
        parts.append(_table('orphans', (('host', 'Host'), ('user', 'User'), ('uid', 'UID'),
                                        ('process_count', 'Processes')), report['orphans'], lambda r, c: r.get(c)))
    if report['lockouts']:
        parts.append('<h2>Locked out</h2>')
        parts.append(_table('lockouts', (('host', 'Host'), ('user', 'User'), ('locked_at', 'Since'),
                                         ('reason', 'Reason')), report['lockouts'], lambda r, c: r.get(c)))
    if report['history_days']:
        parts.append('<h2>Login history, last %s day(s) (<span id="history-count">%d</span>)</h2>'
                     % (h(report['history_days']), len(report['history'])))
        parts.append('<p class="note">%s</p>' % h(WTMP_NOTE))
        parts.append(_table('history', _LOGIN_HEADS, report['history'],
                            lambda r, c: ' '.join(r.get('client_ips') or []) if c == 'client_ip' else r.get(c)))
        parts.append('<h3>wtmp coverage</h3><ul id="coverage">')
        parts += ['<li>%s: covers from %s%s%s</li>' % (
            h(c['host']), h(c['covers_from'] or 'nothing'), ' (list truncated)' if c['logins_truncated'] else '',
            (' - ' + h(c['error'])) if c['error'] else '') for c in report['history_coverage']]
        parts.append('</ul>')
    parts.append('<script>%s</script></body></html>' % script)
    return '\n'.join(parts) + '\n'


def table(report):
    """The short table for the play output: per host its sessions, then the hosts not audited."""
    per = dict((n, {'sessions': 0, 'attached': 0, 'detached': 0, 'users': set()}) for n in report['hosts_audited'])
    for s in report['sessions']:
        c = per.setdefault(s['host'], {'sessions': 0, 'attached': 0, 'detached': 0, 'users': set()})
        c['sessions'] += 1
        c['users'].add(s['user'] if s['user'] is not None else '#%s' % s['uid'])
        if s['state'] in ('attached', 'detached'):
            c[s['state']] += 1
    names = sorted(set(per) | set(d['host'] for d in report['unreachable']))
    for d in report['unreachable']:
        per[d['host']] = d
    width = max([len('host')] + [len(n) for n in names])
    lines = ['%-*s  %8s  %8s  %8s  %5s' % (width, 'host', 'sessions', 'attached', 'detached', 'users')]
    for n in names:
        c = per[n]
        if 'status' in c:
            lines.append('%-*s  %s: %s' % (width, n, c['status'].upper(), c['error'][:100]))
        else:
            lines.append('%-*s  %8d  %8d  %8d  %5d' % (width, n, c['sessions'], c['attached'], c['detached'],
                                                       len(c['users'])))
    s = report['summary']
    lines.append('%d host(s) audited, %d unreachable, %d failed; %d session(s) of %d user(s)'
                 % (s['hosts_audited'], s['hosts_unreachable'], s['hosts_failed'], s['sessions'], s['users']))
    return lines


def write(report, directory):
    """Write sessions.json, sessions.csv and index.html into ``directory`` (made if missing), each atomically.
    Returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, text in (('sessions.json', to_json(report)), ('sessions.csv', to_csv(report)),
                       ('index.html', to_html(report))):
        path = os.path.join(directory, name)
        fd, tmp = tempfile.mkstemp(prefix='.' + name, dir=directory)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8', newline='') as f:
                f.write(text)
            os.chmod(tmp, 0o640)
            os.rename(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        paths.append(path)
    return paths
