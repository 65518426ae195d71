"""What the lockout tests need beyond the harness: an sshd configured like a stock Debian one where it matters,
password logins, directory-style users, and a look at the host state the lockout may touch.

Kept apart from the rest of the harness on purpose (a small file that only adds).
"""

from __future__ import annotations

import hashlib
import os
import random
import string
import subprocess
from typing import TYPE_CHECKING, Dict, List, Optional

from .host import Host, user_env
from .sshd import Sshd
from .users import TestUser

if TYPE_CHECKING:  # pragma: no cover
    from .scope import Scope


class LockoutSshd(Sshd):
    """The test sshd, plus what a stock Debian sshd has and the lockout relies on or must defeat:

    * ``Include <state>/sshd_config.d/*.conf`` first, as Debian's ``Include /etc/ssh/sshd_config.d/*.conf``;
    * password and keyboard-interactive logins (through PAM: ``UsePAM yes``);
    * ``AuthorizedKeysCommand /bin/cat <state>/akc/%u``: keys of users that have no key file at all.
    """

    def __init__(self, host: Host, state_dir: str, **kw) -> None:
        dropin_dir = os.path.join(state_dir, "sshd_config.d")
        akc_dir = os.path.join(state_dir, "akc")
        super().__init__(host, state_dir, first_config=[
            f"Include {dropin_dir}/*.conf",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication yes",
        ], extra_config=[
            f"AuthorizedKeysCommand /bin/cat {akc_dir}/%u",
            "AuthorizedKeysCommandUser root",
        ], **kw)
        self.dropin_dir = dropin_dir
        self.akc_dir = akc_dir

    def start(self, timeout: float = 15.0) -> "LockoutSshd":
        for d in (self.dropin_dir, self.akc_dir):
            os.makedirs(self.host.path(d), mode=0o755, exist_ok=True)
        super().start(timeout)
        return self

    def command_key(self, name: str, pubkey: str) -> None:
        """Give ``name`` a key that only the AuthorizedKeysCommand hands out."""
        with open(self.host.path(os.path.join(self.akc_dir, name)), "w") as fh:
            fh.write(pubkey.strip() + "\n")

    def login(self, user: TestUser, command: str = "true", timeout: float = 30) -> subprocess.CompletedProcess:
        """A key login, successful or not (exit 255 and sshd's refusal when refused)."""
        return self.run_as(user, command, check=False, timeout=timeout)

    def password_login(self, name: str, password: str, state_dir: str, command: str = "true",
                       timeout: float = 30) -> subprocess.CompletedProcess:
        return password_login(self, name, password, state_dir, command, timeout)


def password_login(sshd: Sshd, name: str, password: str, state_dir: str, command: str = "true",
                   timeout: float = 30) -> subprocess.CompletedProcess:
    """A password login to ``sshd`` tried non-interactively: ssh asks SSH_ASKPASS (forced), which answers
    ``password``; exit 255 when refused."""
    askpass = os.path.join(state_dir, "askpass-" + hashlib.sha256(name.encode()).hexdigest()[:12])
    with open(askpass, "w") as fh:
        fh.write("#!/bin/sh\nprintf '%s\\n' " + _sh_quote(password) + "\n")
    os.chmod(askpass, 0o700)
    argv = ["setsid", "-w", "ssh", "-F", "none", "-p", str(sshd.port),
            "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
            "-o", "NumberOfPasswordPrompts=1", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentityAgent=none", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            "-l", name, sshd.address, "--", command]
    env = user_env({"SSH_ASKPASS": askpass, "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"})
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def set_password(user: TestUser, password: str) -> None:
    user.host.run(["chpasswd"], input=f"{user.name}:{password}\n")


def directory_style_user(scope: "Scope", domain: str = "corp.example") -> TestUser:
    """A user shaped like one from a directory: a name ``sgl.xxxxxx@corp.example`` (which DenyUsers cannot
    express), a passwd entry with no shadow entry (so no expiry applies), and no key file: its key comes from
    the AuthorizedKeysCommand only (see :meth:`LockoutSshd.command_key`). Destroyed with the scope's users."""
    name = "sgl." + "".join(random.choice(string.ascii_lowercase + string.digits) for _i in range(6)) + "@" + domain
    user = scope.user(name, authorize=False)
    # A directory user has no /etc/shadow line: the passwd field "*" (not "x") tells pam_unix not to look for one.
    for host in user.hosts:
        drop_shadow_entry(host, name)
    return user


def drop_shadow_entry(host: Host, name: str) -> None:
    for path, field in (("/etc/passwd", "*"), ("/etc/shadow", None)):
        local = host.path(path)
        st = os.stat(local)
        with open(local) as fh:
            lines = fh.read().splitlines(True)
        out = []
        for line in lines:
            fields = line.split(":")
            if fields[0] != name:
                out.append(line)
            elif field is not None:
                fields[1] = field
                out.append(":".join(fields))
        tmp = local + ".sgtest"
        with open(tmp, "w") as fh:
            fh.writelines(out)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.rename(tmp, local)


def shadow_field(host: Host, name: str, index: int = 7) -> Optional[str]:
    with open(host.path("/etc/shadow")) as fh:
        for line in fh:
            fields = line.rstrip("\n").split(":")
            if fields[0] == name:
                return fields[index]
    return None


def file_state(path: str) -> Optional[Dict[str, object]]:
    """Bytes (as sha256), owner, mode and extended attributes of ``path``; None when it does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    xattrs = {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "uid": st.st_uid, "gid": st.st_gid,
            "mode": st.st_mode & 0o7777, "xattrs": xattrs}


def tree_state(paths: List[str]) -> Dict[str, object]:
    """:func:`file_state` of every file below each of ``paths`` (a directory) or of the path itself."""
    out: Dict[str, object] = {}
    for top in paths:
        if os.path.isdir(top):
            for d, _dirs, files in os.walk(top):
                for f in files:
                    p = os.path.join(d, f)
                    out[p] = file_state(p)
        else:
            out[top] = file_state(top)
    return out


def deny_list(host: Host) -> List[str]:
    """The names in the lockout's deny list on ``host`` (empty when it has none)."""
    try:
        with open(host.path("/var/lib/sessionguard/deny")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
