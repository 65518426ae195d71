"""What a fleet host is made of, prepared on disk before its init starts.

``STATE/template/etc`` is one copy of the machine's /etc (plus the ``ops`` account, its sudo rule and
key; no host keys, no throw-away test accounts): the shared lower layer of every host's /etc overlay.
``STATE/hosts/NAME/`` holds the host's own layer (``etc-upper``: hostname, hosts, machine-id, host
key, sshd_config and every later change) and its own /home, /root, /tmp, /var/log and /var/tmp;
``config.json`` tells the host's init what to mount (hostinit.py).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import uuid
from typing import List, Sequence

from .. import etcdb
from ..host import HarnessError, LocalHost
from ..interpreters import PYENV_ROOT
from ..sshd import SSHD_BINARY
from ..users import OWNER_TAG
from .addresses import address_of, host_name
from .inventory import OPS_USER
from .profiles import Profile
from .sshd import HOST_KEY, KEYS_DIR, host_sshd_config
from .privatevar import private_var_binds
from .syslog import ensure_dev_log, syslogd_argv

OPS_UID_FROM = 1500


def run_parallel(argvs: Sequence[Sequence[str]], timeout: float = 120.0) -> None:
    """Start every command at once, wait for all; raise on the first failure."""
    procs = [(a, subprocess.Popen(list(a), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
             for a in argvs]
    errors = []
    for argv, p in procs:
        try:
            _out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            _out, err = p.communicate()
        if p.returncode != 0:
            errors.append(f"{argv!r} exited {p.returncode}: {err.strip()}")
    if errors:
        raise HarnessError("\n".join(errors))


def make_template(template: str, ops_key_path: str) -> None:
    """The template's /etc and /home: the machine's /etc with the ops account, its sudo rule and
    key; no foreign host keys or throw-away test accounts."""
    os.mkdir(template, 0o755)
    etc = os.path.join(template, "etc")
    LocalHost().run(["cp", "-a", "/etc", etc], timeout=300)
    os.mkdir(os.path.join(template, "home"), 0o755)
    etcdb.drop_accounts(etc, OWNER_TAG)
    for path in glob.glob(os.path.join(etc, "ssh", "ssh_host_*")) + glob.glob(os.path.join(etc, "ssh", "sshd_config.d", "*")):
        os.unlink(path)
    os.makedirs(etc + KEYS_DIR[len("/etc"):], mode=0o755, exist_ok=True)
    uid = etcdb.free_id(etc, OPS_UID_FROM)
    LocalHost().run(["useradd", "--prefix", template, "-m", "-u", str(uid), "-U", "-s", "/bin/bash",
                     "-c", "sessionguard fleet operator", OPS_USER])
    etcdb.write_file(os.path.join(etc, "sudoers.d", "sgfleet-ops"),
                     f"# sessionguard fleet: Ansible logs in as {OPS_USER} and becomes root\n"
                     f"{OPS_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440)
    ssh_dir = os.path.join(template, "home", OPS_USER, ".ssh")
    os.mkdir(ssh_dir, 0o700)
    os.chown(ssh_dir, uid, uid)
    with open(ops_key_path + ".pub") as fh:
        etcdb.write_file(os.path.join(ssh_dir, "authorized_keys"), fh.read(), 0o600, uid, uid)


def _host_dirs(index: int, name: str, hd: str, lower_etc: str) -> None:
    address = address_of(index)
    # The host's /etc: template/etc (lower, shared, never written) + etc-upper (this
    # host's changes: copy-on-write, so every host has its own account database).
    etc = os.path.join(hd, "etc-upper")
    os.mkdir(etc, 0o755)
    os.mkdir(os.path.join(hd, "etc-work"), 0o700)
    os.mkdir(os.path.join(etc, "ssh"), 0o755)
    etcdb.write_file(os.path.join(etc, "hostname"), name + "\n")
    etcdb.write_file(os.path.join(etc, "hosts"),
                     f"127.0.0.1\tlocalhost\n{address}\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    etcdb.write_file(os.path.join(etc, "machine-id"), uuid.uuid4().hex + "\n", 0o444)
    etcdb.write_file(os.path.join(etc, "ssh", "sshd_config"), host_sshd_config(name, address), 0o644)
    for d, mode in (("tmp", 0o1777), ("root", 0o711), ("var-log", 0o755), ("var-tmp", 0o1777)):
        path = os.path.join(hd, d)
        os.mkdir(path)
        os.chmod(path, mode)
    os.mkdir(os.path.join(hd, "root", ".pyenv"), 0o755)
    utmp_gid = etcdb.group_gid(lower_etc, "utmp")
    for f, mode in (("wtmp", 0o664), ("btmp", 0o660), ("lastlog", 0o664)):
        etcdb.write_file(os.path.join(hd, "var-log", f), "", mode, 0, utmp_gid)


def _host_config(index: int, name: str, hd: str, prof: Profile, lower_etc: str) -> dict:
    binds = []
    if os.path.isdir(PYENV_ROOT):
        # /root/.pyenv (read-only) stays reachable below the host's own /root, which is
        # 0711: the pyenv interpreters' RUNPATH is /root/.pyenv/versions/X/lib, and the
        # unprivileged ops user must be able to run them.
        binds.append({"source": PYENV_ROOT, "target": os.path.join(hd, "root", ".pyenv"),
                      "recursive": True, "readonly": True})
    binds += [
        {"source": os.path.join(hd, "root"), "target": "/root", "recursive": True},
        {"source": "overlay", "target": "/etc", "fstype": "overlay",
         "data": f"lowerdir={lower_etc},upperdir={os.path.join(hd, 'etc-upper')},workdir={os.path.join(hd, 'etc-work')}"},
        {"source": os.path.join(hd, "home"), "target": "/home"},
        {"source": os.path.join(hd, "var-log"), "target": "/var/log"},
        {"source": os.path.join(hd, "var-tmp"), "target": "/var/tmp"},
    ]
    binds += private_var_binds(hd)
    hide = []
    if prof.hide_psutil:
        dist = "/usr/lib/python3/dist-packages"
        names = sorted(e for e in os.listdir(dist) if e == "psutil" or e.startswith("psutil-"))
        hide.append({"dir": dist, "names": names})
    return {
        "name": name, "hostname": name, "address": address_of(index),
        "log": os.path.join(hd, "init.log"), "sshd_log": os.path.join(hd, "sshd.log"),
        "binds": binds, "hide": hide,
        "late_binds": [{"source": os.path.join(hd, "tmp"), "target": "/tmp"}],
        "sshd": [SSHD_BINARY, "-D", "-e", "-f", "/etc/ssh/sshd_config"],
        "syslogd": syslogd_argv(hd),
    }


def prepare_hosts(state_dir: str, template: str, indexes: Sequence[int], profs: Sequence[Profile]) -> List[dict]:
    """Make the directories, files and init config of hosts ``indexes`` (profiles taken in turn);
    returns their records for the fleet's state file (the init's PIDs are added once it runs)."""
    lower_etc = os.path.join(template, "etc")
    ensure_dev_log()
    names = [host_name(i) for i in indexes]
    hostdirs = [os.path.join(state_dir, "hosts", name) for name in names]
    for hd in hostdirs:
        os.mkdir(hd, 0o755)
    # /home is copied (ops only); /etc is an overlay on the template's copy
    run_parallel([["cp", "-a", os.path.join(template, "home"), hd] for hd in hostdirs])
    records = []
    for k, (i, name, hd) in enumerate(zip(indexes, names, hostdirs)):
        prof = profs[k % len(profs)]
        _host_dirs(i, name, hd, lower_etc)
        etcdb.write_file(os.path.join(hd, "config.json"),
                         json.dumps(_host_config(i, name, hd, prof, lower_etc), indent=1) + "\n", 0o600)
        records.append({"index": i, "name": name, "hostname": name, "address": address_of(i), "hostdir": hd,
                        "profile": prof.name, "profile_spec": prof.spec(), "python": prof.interpreter(),
                        "psutil": prof.psutil, "groups": list(prof.groups)})
    run_parallel([["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
                   "-f", os.path.join(hd, "etc-upper", HOST_KEY[len("/etc/"):])] for name, hd in zip(names, hostdirs)])
    return records
