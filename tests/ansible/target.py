"""A throwaway Debian target for the playbooks: a debootstrap root driven through community.general.chroot.

No Docker engine and no systemd as PID 1 here, so the playbooks run against a chroot, and the daemons they install
are then started by hand from the root (`chroot ROOT ...`), with the installed binaries and configs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pki import make_ca, make_cert

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SUITE = "bookworm"
# The mirror apt on this machine uses; CI machines have the same file on Debian 12.
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The only collections needed: the chroot connection. Not on PyPI on its own; it ships in the `ansible` bundle.
ANSIBLE_BUNDLE = "ansible==12.3.0"
COLLECTION_DIRS = ("ansible_collections/community/general/", "ansible_collections/ansible/posix/")


class TargetError(RuntimeError):
    pass


def mirror() -> str:
    if SOURCES.exists():
        m = re.search(r"^URIs:\s*(\S+)", SOURCES.read_text(), re.M)
        if m:
            return m.group(1)
    return DEFAULT_MIRROR


def run(cmd: list[str], *, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check and p.returncode != 0:
        raise TargetError(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def collections(dest: Path) -> Path:
    """community.general (+ ansible.posix): ANSIBLE_COLLECTIONS_PATHS if it has them, else unpacked from the bundle."""
    for base in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep):
        if base and (Path(base) / "ansible_collections/community/general/plugins/connection/chroot.py").exists():
            return Path(base)
    dest.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), ANSIBLE_BUNDLE])
    wheel = next(dest.glob("ansible-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest, [n for n in z.namelist() if n.startswith(COLLECTION_DIRS)])
    wheel.unlink()
    return dest


def wheelhouse(dest: Path) -> Path:
    """The edge-gw wheel (this tree) and its dependencies, for the roles' offline install, and the edge-gw-speedups
    wheel (speedups/). Built by this Python for this machine, as the compiled dependencies are: the bookworm root
    runs Python 3.11 on the same architecture."""
    run([sys.executable, "-m", "pip", "wheel", "--quiet", f"{REPO}[gateway,cloud]", str(REPO / "speedups"),
         "-w", str(dest)])
    return dest


def certificates(dest: Path) -> dict[str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 (tests/pki.py), as PEM text."""
    ca = make_ca(dest, "ca", key="rsa")
    crt, key = make_cert(dest, "server", "ca", server=True, cn="127.0.0.1", key="rsa")
    return {"ca": ca.read_text(), "cert": crt.read_text(), "key": key.read_text()}


@dataclass
class Root:
    """A Debian root with proc, sys and devpts mounted; policy-rc.d stops package scripts from starting daemons."""

    path: Path

    def create(self) -> Root:
        run(["debootstrap", "--variant=minbase", "--include=python3,ca-certificates,systemd", SUITE, str(self.path),
             mirror()], timeout=900)
        policy = self.path / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        self.mount()
        return self

    def mount(self) -> None:
        for fs, where, opts in (("proc", "proc", []), ("sysfs", "sys", []),
                                ("devpts", "dev/pts", ["-o", "newinstance,ptmxmode=0666"])):
            target = self.path / where
            if not os.path.ismount(target):
                run(["mount", "-t", fs, *opts, fs, str(target)])

    def unmount(self) -> None:
        for where in ("dev/pts", "sys", "proc"):
            target = self.path / where
            with contextlib.suppress(TargetError):
                if os.path.ismount(target):
                    run(["umount", "-l", str(target)])

    def destroy(self) -> None:
        self.unmount()
        for where in ("dev/pts", "sys", "proc"):
            if os.path.ismount(self.path / where):
                raise TargetError(f"{self.path / where} is still mounted; not removing the root")
        run(["rm", "-rf", "--one-file-system", str(self.path)], check=False)

    def file(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def verify_unit(self, name: str) -> subprocess.CompletedProcess[str]:
        """`systemd-analyze verify` of /etc/systemd/system/<name> in this root. It exits 0 on unknown keys and bad
        values and only warns, so callers look at its output too."""
        return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={self.path}",
                               f"/etc/systemd/system/{name}"], capture_output=True, text=True, check=False)

    def chroot(self, *cmd: str, user: str | None = None) -> list[str]:
        spec = [f"--userspec={user}:{user}"] if user else []
        # The controller's environment must not leak in (PATH, PIP_*, pyenv).
        return ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "chroot", *spec, str(self.path), *cmd]


def ansible_env(workdir: Path, collections_path: Path) -> dict[str, str]:
    """A hermetic environment for ansible-playbook: own temp dirs and config, no PIP_* leaking into the target."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "ANSIBLE_", "VIRTUAL_ENV", "PYTHON"))}
    home = workdir / "ansible-home"
    env.update({
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": "/tmp/.ansible-remote",
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
        # Modules run in the chroot with the controller's PATH: keep it to the system directories.
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    })
    return env


def ansible_playbook(playbook: Path, inventory: Path, env: dict[str, str],
                     extra_vars: dict[str, object] | None = None) -> tuple[dict[str, int], str]:
    """Run a playbook; return the PLAY RECAP counters of the single host and the full output."""
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    exe = shutil.which("ansible-playbook", path=search)
    if exe is None:
        raise TargetError("ansible-playbook is not installed (pip install 'ansible-core==2.19.*')")
    extra = ["-e", json.dumps(extra_vars)] if extra_vars else []
    p = run([exe, "-i", str(inventory), *extra, str(playbook)], check=False, env=env, timeout=900)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise TargetError(f"{playbook.name} failed (rc={p.returncode}):\n{out[-8000:]}")
    m = re.search(r"^\S+\s*:\s*(ok=.*)$", out, re.M)
    if not m:
        raise TargetError(f"no PLAY RECAP line:\n{out[-4000:]}")
    recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
    return recap, out


def render_templates(work: Path, role: Path, templates: dict[str, tuple[str, Path, str]],
                     overrides: dict[str, object] | None = None) -> dict[str, int]:
    """Render a role's templates on localhost (seconds, no target), with the role's defaults and `overrides`:
    one template task per {task name: (template file, dest, mode)}. Returns the PLAY RECAP counters."""
    work.mkdir(parents=True, exist_ok=True)
    book = work / "render.yml"
    book.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False, "vars_files": [str(role / "defaults" / "main.yml")],
        "tasks": [{"name": name, "ansible.builtin.template": {"src": str(role / "templates" / src), "dest": str(dest),
                                                               "mode": mode}}
                  for name, (src, dest, mode) in templates.items()],
    }]))
    inventory = work / "hosts.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    recap, _ = ansible_playbook(book, inventory, ansible_env(work, work / "collections"),
                                extra_vars=dict(overrides) if overrides else None)
    return recap
