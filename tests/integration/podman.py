"""Rootful podman with storage, state and networks of its own (under .cache/podman by default): the image test
never sees or changes the user's own containers and images. Where no container registry answers, the base image
of docker/Dockerfile is a stand-in made with mmdebstrap (Debian bookworm, whose python3 is 3.11)."""

from __future__ import annotations

import os
import resource
import shutil
import ssl
import subprocess
import tarfile
import tempfile
from pathlib import Path

BASE_IMAGE = "docker.io/library/python:3.11-slim"  # docker/Dockerfile's FROM, fully qualified
# The stand-in: what `python -m venv` and `pip install` need, CA certificates, and `python` where python:3.11-slim
# has it (Debian names it python3). useradd and groupadd come with the essential packages.
STANDIN_PACKAGES = ("python3", "python3-venv", "ca-certificates")


class PodmanError(RuntimeError):
    """A podman command failed: its arguments and output."""


def problem() -> str | None:
    """Why podman cannot run the image test here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian packages podman runc netavark aardvark-dns: `make install`)"
    if shutil.which("runc") is None:
        return "runc is not installed (`make install`)"
    if os.geteuid() != 0:
        return "the image test runs rootful podman: run it as root"
    return None


def host_ca_bundle() -> Path:
    """The CA bundle this host's pip trusts (a TLS proxy's CA included)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      ssl.get_default_verify_paths().openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("no CA bundle on this host (set PIP_CERT or SSL_CERT_FILE)")


class Podman:
    """`podman` on storage of its own under `home`.

    runc, not crun (crun fails on hybrid cgroups, as on these machines), cgroupfs (no systemd), and rlimits no
    higher than this process's own: without CAP_SYS_RESOURCE podman's defaults (1M open files) fail the start.
    """

    def __init__(self, home: Path):
        self.home = home
        for folder in ("root", "run", "tmp", "networks"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
        (home / "containers.conf").write_text(f"""\
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{home / 'tmp'}"
[network]
network_backend = "netavark"
network_config_dir = "{home / 'networks'}"
""")
        (home / "storage.conf").write_text(f"""\
[storage]
driver = "overlay"
graphroot = "{home / 'root'}"
runroot = "{home / 'run'}"
""")
        self.env = {**os.environ, "CONTAINERS_CONF": str(home / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(home / "storage.conf")}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def has_image(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def base_image(self) -> str:
        """Makes BASE_IMAGE available: pulled where a registry answers, else the stand-in (made once, kept in
        this storage). Returns a line that says which."""
        if self.has_image(BASE_IMAGE):
            label = self("image", "inspect", "--format", '{{index .Labels "maddpg.stand-in"}}', BASE_IMAGE).stdout
            return (f"base image {BASE_IMAGE}: " + (f"STAND-IN made earlier with mmdebstrap ({label.strip()})"
                                                    if label.strip() else "pulled earlier"))
        pulled = self("pull", "--quiet", BASE_IMAGE, timeout=600, check=False)
        if pulled.returncode == 0:
            return f"base image {BASE_IMAGE}: pulled"
        reason = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
        what = self._make_stand_in()
        return (f"base image {BASE_IMAGE}: no registry reachable ({reason}); built on a STAND-IN made with "
                f"mmdebstrap ({what})")

    def _make_stand_in(self) -> str:
        if shutil.which("mmdebstrap") is None:
            raise PodmanError(f"{BASE_IMAGE} cannot be pulled and mmdebstrap (to make a stand-in) is not installed: "
                              "`make install`")
        with tempfile.TemporaryDirectory(dir=self.home / "tmp") as work:
            tarball = Path(work) / "base.tar"
            # `python` as python:3.11-slim has it; docs and locales left out (as the slim image does).
            subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(STANDIN_PACKAGES)}",
                            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                            "--dpkgopt=path-exclude=/usr/share/locale/*",
                            '--customize-hook=ln -s /usr/bin/python3 "$1/usr/local/bin/python"',
                            "bookworm", str(tarball)], check=True, capture_output=True, timeout=600)
            version = _python_version(tarball)
            what = f"Debian bookworm, Python {version}"
            self("import", "--quiet", "--change", f"LABEL maddpg.stand-in=\"{what}\"", "--change",
                 'CMD ["python3"]', str(tarball), BASE_IMAGE, timeout=300)
        return what


def _python_version(tarball: Path) -> str:
    """The Debian version of python3 in the stand-in (from its dpkg status)."""
    with tarfile.open(tarball) as tar:
        status = tar.extractfile("./var/lib/dpkg/status").read().decode()
    for block in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") == "python3":
            return fields["Version"]
    return "unknown"
