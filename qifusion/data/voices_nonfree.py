"""The licence gate of the ``accents`` corpus: installing the non-free MBROLA voices, explicitly.

MBROLA's diphone databases are in Debian's ``non-free`` component (non-commercial, no-modification
licence; the ``mbrola`` program itself is AGPL but also lives outside ``main`` in bookworm). Nothing in
qifusion installs them on its own: ``make setup`` and CI install only free packages, and the
``accents`` preset stops with :data:`INSTALL_COMMAND` in its error when they are missing.

``qifusion voices install-nonfree`` (:func:`install_nonfree`) prints every change first, asks (unless
``--yes``), then:

1. writes :data:`SOURCES_FILE`, an apt source with the ``contrib non-free`` components of the system's
   Debian mirror and release (nothing else in ``/etc/apt`` is edited);
2. runs ``apt-get update`` and ``apt-get install`` for :data:`NONFREE_PACKAGES`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qifusion.errors import UserError

INSTALL_COMMAND = "qifusion voices install-nonfree"
SOURCES_FILE = Path("/etc/apt/sources.list.d/qifusion-nonfree.sources")
NONFREE_LICENCE = ("MBROLA diphone databases (Debian non-free): to be used only with the MBROLA program, "
                   "not to be sold or built into a product that is sold without the database owner's "
                   "permission, i.e. non-commercial use (each voice's terms: "
                   "/usr/share/doc/mbrola-XX/copyright); the mbrola program: AGPL-3+")
# every MBROLA database the `accents` preset reads (qifusion.data.voices_accents.ACCENT_VOICES)
MBROLA_DATABASES = ("de1", "de2", "de3", "de4", "de5", "de6", "de7", "fr1", "fr2", "fr3", "fr4", "fr5",
                    "fr6", "fr7", "nl2", "sw1", "sw2", "us1", "us2", "us3", "en1", "pl1", "hu1")
NONFREE_PACKAGES = ("mbrola", *(f"mbrola-{d}" for d in MBROLA_DATABASES))
# free voices in Debian's contrib component, which `make setup` installs only where apt already sees contrib
CONTRIB_FREE_PACKAGES = ("festvox-rablpc16k",)


@dataclass(frozen=True)
class InstallPlan:
    """What :func:`install_nonfree` would change: the apt source to write (None: already there) and
    the packages to install (those not installed yet)."""

    sources_file: Path
    sources_text: str | None
    packages: tuple[str, ...]

    def describe(self) -> str:
        lines = [f"{INSTALL_COMMAND} will change this system as follows:"]
        if self.sources_text is None:
            lines.append(f"  apt source {self.sources_file}: already present, unchanged")
        else:
            lines.append(f"  write {self.sources_file} (adds Debian's 'contrib non-free' components):")
            lines += ["    " + ln for ln in self.sources_text.splitlines()]
            lines.append("  run: apt-get update")
        if self.packages:
            lines.append(f"  run: apt-get install -y {' '.join(self.packages)}")
        else:
            lines.append("  all MBROLA packages are already installed")
        lines.append(f"  licence: {NONFREE_LICENCE}")
        return "\n".join(lines)


def debian_mirror_and_suite(sources_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian mirror URI and release codename the system's apt sources use (deb822 ``.sources``
    or one-line ``.list``); falls back to ``http://deb.debian.org/debian`` and ``/etc/os-release``."""
    files = [*sorted(sources_dir.glob("sources.list.d/*.sources")),
             *sorted(sources_dir.glob("sources.list.d/*.list"))]
    files.append(sources_dir / "sources.list")
    for f in files:
        if not f.is_file() or f == SOURCES_FILE:
            continue
        text = f.read_text(errors="replace")
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        suites = re.findall(r"^Suites:\s*(\S+)", text, re.M) + re.findall(
            r"^deb\s+(?:\[[^]]*\]\s+)?\S+\s+(\S+)", text, re.M)
        for uri, suite in zip(uris, suites):
            if uri.rstrip("/").endswith("/debian") and "security" not in suite:
                return uri.rstrip("/"), suite
    codename = ""
    osr = Path("/etc/os-release")
    if osr.is_file():
        m = re.search(r"^VERSION_CODENAME=(\w+)", osr.read_text(), re.M)
        codename = m.group(1) if m else ""
    if not codename:
        raise UserError("cannot tell the Debian release from /etc/apt or /etc/os-release: "
                        "install the MBROLA voices by hand (see docs/synth.md)")
    return "http://deb.debian.org/debian", codename


def sources_text(uri: str, suite: str) -> str:
    """The deb822 apt source that adds ``contrib non-free`` for ``suite`` (and its -updates)."""
    return (f"# written by '{INSTALL_COMMAND}' for the MBROLA voices of the qifusion 'accents' corpus\n"
            f"Types: deb\nURIs: {uri}\nSuites: {suite} {suite}-updates\nComponents: contrib non-free\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def package_installed(name: str) -> bool:
    """Whether dpkg reports ``name`` as installed."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True,
                       check=False)
    return r.returncode == 0 and r.stdout.strip().endswith(" installed")


def plan_install() -> InstallPlan:
    """What :func:`install_nonfree` would do on this system (reads only)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        raise UserError("install-nonfree needs a Debian-like system with apt-get; on others install "
                        f"MBROLA and the voices {', '.join(MBROLA_DATABASES)} by hand (see docs/synth.md)")
    text = None
    if not SOURCES_FILE.is_file():
        text = sources_text(*debian_mirror_and_suite())
    wanted = (*NONFREE_PACKAGES, *CONTRIB_FREE_PACKAGES)
    return InstallPlan(SOURCES_FILE, text, tuple(p for p in wanted if not package_installed(p)))


def install_nonfree(*, yes: bool, dry_run: bool) -> int:
    """Print the plan; unless ``dry_run``, ask (unless ``yes``) and apply it. Returns an exit code."""
    plan = plan_install()
    print(plan.describe())
    if dry_run or (plan.sources_text is None and not plan.packages):
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise UserError("not a terminal: re-run with --yes to confirm these changes")
        if input("proceed? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if plan.sources_text is not None:
        subprocess.run([*sudo, "tee", str(plan.sources_file)], input=plan.sources_text.encode(),
                       stdout=subprocess.DEVNULL, check=True)
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    if plan.packages:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *plan.packages], check=True, env=env)
    print("installed; remove with: apt-get remove " + " ".join(NONFREE_PACKAGES)
          + f" && rm {plan.sources_file} && apt-get update")
    return 0
