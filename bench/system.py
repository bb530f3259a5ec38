"""The machine, the tools the baselines need (installed with apt when missing and root), their versions."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REPO",
    "Tools",
    "find_tool",
    "git_revision",
    "machine_info",
    "module_version",
    "raise_nofile",
    "tool_versions",
]

REPO = Path(__file__).resolve().parent.parent

# command -> Debian package that provides it
_PACKAGES = {"nginx": "nginx-light", "aria2c": "aria2", "curl": "curl"}
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


def find_tool(name: str) -> str | None:
    """The executable's path; /usr/sbin is searched too (it is often not on a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


@dataclass
class Tools:
    """Paths of the external programs, and why a missing one is missing."""

    paths: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return self.paths.get(name)

    @classmethod
    def ensure(cls, names: list[str]) -> Tools:
        """Find each tool; install the missing ones with apt-get when running as root, else record why not."""
        tools = cls()
        absent = [n for n in names if find_tool(n) is None]
        if absent and os.geteuid() == 0 and shutil.which("apt-get"):
            tools._apt_install(absent)
        for name in names:
            path = find_tool(name)
            if path is not None:
                tools.paths[name] = path
            elif name not in tools.missing:
                reason = "not installed and not running as root (cannot apt-get install)"
                if os.geteuid() == 0 and not shutil.which("apt-get"):
                    reason = "not installed and apt-get is not available"
                tools.missing[name] = f"`{name}` {reason} ({_PACKAGES.get(name, name)})"
        return tools

    def _apt_install(self, absent: list[str]) -> None:
        packages = sorted({_PACKAGES.get(n, n) for n in absent})
        print(f"[bench] installing {' '.join(packages)} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Keep the package's init script from starting a system nginx we would not own.
        made_policy = False
        if not _POLICY_RC.exists():
            try:
                _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
                _POLICY_RC.chmod(0o755)
                made_policy = True
            except OSError:
                pass
        try:
            cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
            result = _run_quiet(cmd, env, timeout=600)
            if result is not None and result.returncode != 0:
                _run_quiet(["apt-get", "update"], env, timeout=600)
                result = _run_quiet(cmd, env, timeout=600)
            if result is None or result.returncode != 0:
                tail = "" if result is None else (result.stdout or "").strip().splitlines()[-1:]
                for name in absent:
                    self.missing[name] = f"`{name}` missing and `{' '.join(cmd)}` failed: {tail or 'timed out'}"
            else:
                self.installed.extend(packages)
        finally:
            if made_policy:
                _POLICY_RC.unlink(missing_ok=True)


def _run_quiet(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def raise_nofile(wanted: int = 16384) -> tuple[int, int]:
    """Raise the soft open-files limit (inherited by the services we start); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "CPU": _cpu_model(),
        "cores (logical)": str(os.cpu_count()),
        "RAM": f"{mem / 2**30:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "OS": _os_release(),
        "filesystem of the work dir": "",  # filled in by run.py
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def module_version(name: str) -> str | None:
    """The installed version of a Python package, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions(tools: Tools) -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in ("httpx", "uvicorn", "sse-starlette", "huggingface_hub", "psutil"):
        versions[package] = module_version(package) or "not installed (pip install -e '.[bench]')"
    commands = {"nginx": ["-v"], "curl": ["--version"], "aria2c": ["--version"]}
    for name, args in commands.items():
        path = tools.get(name) or find_tool(name)  # (looked up even where no scenario run needed it)
        line = _first_line([path, *args]) if path else "not installed"
        versions[name] = " ".join(line.split()[:3]) if name == "curl" else line
    return versions


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "services", "shared"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not rev:
        return "unknown"
    return f"{rev} (+ uncommitted changes in services/ or shared/)" if dirty else rev
