"""One in-process discovery on this machine, timed; run by benchmarks/run.py in a fresh interpreter.

Usage: PYTHONPATH=<collections dir> python benchmarks/_probe.py UID READER
Prints seconds, the number of processes planned and the size of the process table, as JSON. READER is ``procfs`` or ``psutil``. Works against
older checkouts too (whose Snapshot reads every process in full and takes no ``uids``).
"""

from __future__ import annotations

import json
import sys
import time

from ansible_collections.sessionguard.mosh.plugins.module_utils import _procfs, _revoke, _sessions


def main():
    uid, which = int(sys.argv[1]), sys.argv[2]
    t = time.monotonic()
    reader = _procfs.make_reader(prefer_psutil=(which == 'psutil'))
    try:
        snap = _procfs.Snapshot(reader, uids=[uid])
    except TypeError:
        snap = _procfs.Snapshot(reader)
    plan = _revoke.Plan(snap, [uid], 'all', False, _procfs.own_chain(), _sessions.ExeJudge())
    planned = len(plan.procs)
    print(json.dumps({'seconds': time.monotonic() - t, 'planned': planned, 'reader': reader.name,
                      'sessions': len(plan.sessions), 'table': len(snap.procs)}))


if __name__ == '__main__':
    main()
