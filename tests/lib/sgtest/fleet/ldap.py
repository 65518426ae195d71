"""A real LDAP directory for the fleet: Debian's slapd on loopback with its own configuration, and fleet hosts whose
NSS asks it through nslcd (libnss-ldapd), as hosts joined to a directory do.

Users added here exist only in the directory: no /etc/passwd or /etc/shadow line on any host.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional

from sgtest import procfs
from sgtest.host import HarnessError
from sgtest.waiting import wait_for

SUFFIX = "dc=corp,dc=example"
ADMIN = "cn=admin," + SUFFIX
ADMIN_PW = "sgtest-directory"
SLAPD = "/usr/sbin/slapd"
NSLCD = "/usr/sbin/nslcd"


def _free_port(address: str = "127.0.0.1") -> int:
    for _attempt in range(200):
        port = random.randint(20000, 29999)
        s = socket.socket()
        try:
            s.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise HarnessError("no free port for slapd")


class Directory:
    """slapd serving ``dc=corp,dc=example`` on ``ldap://127.0.0.1:PORT/`` from ``state_dir`` (config, database,
    PID file); started and stopped by PID."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.port = _free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}/"
        self.conf = os.path.join(state_dir, "slapd.conf")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Directory":
        db = os.path.join(self.state_dir, "db")
        os.makedirs(db, mode=0o700, exist_ok=True)
        with open(self.conf, "w") as fh:
            fh.write("\n".join([
                "include /etc/ldap/schema/core.schema",
                "include /etc/ldap/schema/cosine.schema",
                "include /etc/ldap/schema/nis.schema",
                "include /etc/ldap/schema/inetorgperson.schema",
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {self.state_dir}/slapd.pid",
                "database mdb",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ADMIN}"',
                f"rootpw {ADMIN_PW}",
                f"directory {db}",
                "maxsize 16777216",
                "",
            ]))
        base = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: corp\ndc: corp\n\n"
                f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"
                f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n")
        subprocess.run(["slapadd", "-f", self.conf], input=base, text=True, capture_output=True, check=True)
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-h", self.uri, "-f", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        wait_for(self._answers, 15, lambda: f"slapd on {self.uri}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"slapd exited {self.proc.returncode}: {self.proc.stderr.read() if self.proc.stderr else ''}")
        cp = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", self.uri, "-b", SUFFIX, "-s", "base", "dn"],
                            capture_output=True, text=True, check=False)
        return cp.returncode == 0

    def add_user(self, name: str, uid: int, home: str, shell: str = "/bin/bash") -> None:
        ldif = (f"dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: {name}\ngidNumber: {uid}\n\n"
                f"dn: uid={name},ou=people,{SUFFIX}\nobjectClass: account\nobjectClass: posixAccount\n"
                f"uid: {name}\ncn: {name}\nuidNumber: {uid}\ngidNumber: {uid}\nhomeDirectory: {home}\n"
                f"loginShell: {shell}\n")
        subprocess.run(["ldapadd", "-x", "-H", self.uri, "-D", ADMIN, "-w", ADMIN_PW], input=ldif, text=True,
                       capture_output=True, check=True)

    def add_group(self, name: str, gid: int, members: List[str]) -> None:
        """A posixGroup listing ``members`` (memberUid: names, local or directory users alike)."""
        ldif = (f"dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: {name}\ngidNumber: {gid}\n"
                + "".join(f"memberUid: {m}\n" for m in members))
        subprocess.run(["ldapadd", "-x", "-H", self.uri, "-D", ADMIN, "-w", ADMIN_PW], input=ldif, text=True,
                       capture_output=True, check=True)

    def resume(self) -> "Directory":
        """Start slapd again on the same port and database after :meth:`stop`."""
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-h", self.uri, "-f", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        wait_for(self._answers, 15, lambda: f"slapd on {self.uri}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class DirectoryClient:
    """A fleet host whose NSS asks the directory: nsswitch.conf ``passwd``/``group`` with ``ldap``, an nslcd of
    its own (PID namespace, /run) pointed at the directory. :meth:`stop` puts the host back."""

    def __init__(self, host, directory: Directory) -> None:
        self.host, self.directory = host, directory
        self.saved: Dict[str, Optional[bytes]] = {}
        self.pid: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None

    def _save(self, path: str) -> None:
        try:
            with open(self.host.path(path), "rb") as fh:
                self.saved[path] = fh.read()
        except FileNotFoundError:
            self.saved[path] = None

    def start(self) -> "DirectoryClient":
        for path in ("/etc/nsswitch.conf", "/etc/nslcd.conf"):
            self._save(path)
        with open(self.host.path("/etc/nsswitch.conf"), "rb") as fh:
            lines = fh.read().decode().splitlines()
        out = []
        for line in lines:
            key = line.split(":", 1)[0].strip()
            out.append(line.rstrip() + " ldap" if key in ("passwd", "group") and "ldap" not in line else line)
        with open(self.host.path("/etc/nsswitch.conf"), "w") as fh:
            fh.write("\n".join(out) + "\n")
        with open(self.host.path("/etc/nslcd.conf"), "w") as fh:
            fh.write(f"uid nslcd\ngid nslcd\nuri {self.directory.uri}\nbase {SUFFIX}\n")
        os.chmod(self.host.path("/etc/nslcd.conf"), 0o640)
        self.host.run(["install", "-d", "-o", "nslcd", "-g", "nslcd", "-m", "0755", "/run/nslcd"])
        self.proc = self.host.spawn([NSLCD, "-n"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: os.path.exists(self.host.path("/run/nslcd/socket")), 15,
                 f"nslcd of {self.host.name} to listen")
        return self

    def resolves(self, name: str) -> bool:
        return self.host.run(["getent", "passwd", name], check=False).returncode == 0

    def nslcd_pids(self) -> List[int]:
        return [p.pid for p in procfs.iter_procs(self.host.proc_root) if p.comm == "nslcd"]

    def stop(self) -> None:
        for pid in self.nslcd_pids():
            try:
                os.kill(self.host.global_pid(pid) or pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        deadline = time.monotonic() + 10
        while self.nslcd_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for path, data in self.saved.items():
            local = self.host.path(path)
            if data is None:
                if os.path.exists(local):
                    os.unlink(local)
            else:
                with open(local, "wb") as fh:
                    fh.write(data)
        if self.nslcd_pids():
            raise HarnessError(f"nslcd of {self.host.name} did not stop: {self.nslcd_pids()}")
