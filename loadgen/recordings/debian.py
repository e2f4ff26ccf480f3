"""Getting pinned Debian packages: download with apt, check the sha256, extract only what is needed.

`apt-get download NAME=VERSION` needs no root and writes the .deb into its working directory. On a
fresh machine the package lists may be missing or stale, so a failed download runs `apt-get update`
once (through sudo when not root) and tries again; a version the mirror no longer carries is then a
clear error naming the package, never a silent switch to another version.

A .deb is used only after its sha256 matches the catalogue's: a cached file that does not match is
deleted and downloaded again, and a fresh download that does not match is refused (ChecksumError),
before anything is extracted from it.

Also here: the reader for OpenTTD's .cat sound bank (opensfx.cat), a table of offsets followed by
entries that are each a title and a whole RIFF WAV.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .catalogue import Package

__all__ = [
    "ChecksumError",
    "DownloadError",
    "RecordingsError",
    "cat_entries",
    "ensure_deb",
    "extract_members",
    "sha256_file",
]

# `apt-get download` of a few MB from a Debian mirror; generous for a slow mirror, finite for a dead one.
APT_DOWNLOAD_TIMEOUT_S = 600.0
# `apt-get update` fetches every configured list: slower than one package on a cold mirror.
APT_UPDATE_TIMEOUT_S = 900.0
_HASH_BLOCK = 1 << 20  # read files in 1 MiB blocks for hashing


class RecordingsError(RuntimeError):
    """The recordings could not be fetched or built; the message says what to do."""


class ChecksumError(RecordingsError):
    """A downloaded .deb is not the pinned one (its sha256 differs). Nothing from it is used."""


class DownloadError(RecordingsError):
    """apt could not download a pinned package version."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _deb_name(pkg: Package) -> str:
    # apt writes an epoch's ':' as '%3a' in file names; we keep our own simpler name.
    return f"{pkg.name}_{pkg.version.replace(':', '_')}_all.deb"


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise DownloadError(f"{cmd[0]} is not installed: the recordings come from Debian packages") from exc
    except subprocess.TimeoutExpired as exc:
        raise DownloadError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from exc


def _apt_update(workdir: Path) -> str:
    cmd = ["apt-get", "update", "-qq"]
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            return "not root and no sudo: cannot run apt-get update"
        cmd = ["sudo", "-n", *cmd]
    done = _run(cmd, workdir, APT_UPDATE_TIMEOUT_S)
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()[-500:]


class AptDownloader:
    """Downloads pinned .debs; runs `apt-get update` at most once in its lifetime.

    `update_lists=False` never runs it (a test of the error path should not refresh a shared
    machine's package lists under another process's apt-get install).
    """

    def __init__(self, update_lists: bool = True) -> None:
        self._updated = not update_lists

    def download(self, pkg: Package, workdir: Path) -> Path:
        """`pkg`'s .deb downloaded into `workdir` (an empty directory of its own)."""
        spec = f"{pkg.name}={pkg.version}"
        done = _run(["apt-get", "download", spec], workdir, APT_DOWNLOAD_TIMEOUT_S)
        updated, update_error = False, ""
        if done.returncode != 0 and not self._updated:
            # Stale or missing package lists are the usual cause on a fresh machine.
            self._updated = updated = True
            update_error = _apt_update(workdir)
            done = _run(["apt-get", "download", spec], workdir, APT_DOWNLOAD_TIMEOUT_S)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-500:]
            if update_error:
                detail += f" (apt-get update failed too: {update_error})"
            raise DownloadError(_gone_message(pkg, detail, updated))
        debs = sorted(workdir.glob("*.deb"))
        if len(debs) != 1:
            raise DownloadError(f"apt-get download {spec} left {len(debs)} .deb files in {workdir}")
        return debs[0]


def _gone_message(pkg: Package, detail: str, updated: bool) -> str:
    after = ", even after apt-get update" if updated else ""
    return (
        f"apt-get could not download {pkg.name}={pkg.version}{after}: {detail}. "
        f"If the Debian mirror no longer carries this version, pin the one it has "
        f"(apt-cache policy {pkg.name}), download it, and write its version and sha256 into "
        f"loadgen/recordings/catalogue.py."
    )


def ensure_deb(pkg: Package, debs_dir: Path, downloader: AptDownloader) -> Path:
    """The verified .deb of `pkg` in `debs_dir`: the cached one if its sha256 matches, else a new download.

    Raises ChecksumError when a fresh download does not match the pin (the file is deleted).
    """
    debs_dir.mkdir(parents=True, exist_ok=True)
    target = debs_dir / _deb_name(pkg)
    if target.exists():
        if sha256_file(target) == pkg.sha256:
            return target
        target.unlink()  # corrupted or swapped: never used, fetched again below
    with tempfile.TemporaryDirectory(prefix=f".{pkg.name}-", dir=debs_dir) as tmp:
        fresh = downloader.download(pkg, Path(tmp))
        got = sha256_file(fresh)
        if got != pkg.sha256:
            raise ChecksumError(
                f"{pkg.name}={pkg.version}: the downloaded .deb has sha256 {got}, the catalogue pins "
                f"{pkg.sha256}. Refusing it: nothing was extracted. If Debian rebuilt the package, check "
                f"the new file and update the pin in loadgen/recordings/catalogue.py."
            )
        os.replace(fresh, target)
    return target


def extract_members(deb: Path, members: set[str], dest: Path) -> None:
    """Extract the files `members` (paths inside the package) of `deb` under `dest`.

    Streams `dpkg-deb --fsys-tarfile` through tarfile and writes only the wanted members, so a 20 MB
    package costs the few files a catalogue takes from it. Symlinks inside the package are followed
    to the file they name. A member that is missing is an error naming it.
    """
    wanted = {m.removeprefix("./") for m in members}
    links: dict[str, str] = {}
    found: set[str] = set()
    try:
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise RecordingsError("dpkg-deb is not installed: the recordings come from Debian packages") from exc
    with proc, tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name not in wanted:
                continue
            if info.issym():
                links[name] = os.path.normpath(os.path.join(os.path.dirname(name), info.linkname)).lstrip("/")
                continue
            src = tar.extractfile(info)
            if src is None:
                continue
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("wb") as fh:
                shutil.copyfileobj(src, fh)
            found.add(name)
        if proc.stdout is not None:
            proc.stdout.read()  # the archive's end padding: dpkg-deb exits once it has written it all
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RecordingsError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {stderr.strip()[-300:]}")
    if links:
        # A second pass for link targets that were not themselves wanted.
        targets = {t for t in links.values() if t not in found}
        if targets:
            extract_members(deb, targets, dest)
        for name, target in links.items():
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dest / target, out)
            found.add(name)
    missing = wanted - found
    if missing:
        raise RecordingsError(f"{deb.name} has no {', '.join(sorted(missing))}")


# OpenTTD's sound bank (src/sound.cpp, OpenBankFile): a table of (offset, size) uint32 LE pairs
# whose first offset, divided by 8, is the count; bit 31 of the first word marks the "new" format.
# Each entry is a length-prefixed title followed by a RIFF WAV file of the remaining size.
_CAT_NEW_FORMAT_BIT = 0x80000000


def cat_entries(data: bytes) -> dict[str, bytes]:
    """Title -> WAV bytes of every non-empty entry of an OpenTTD .cat sound bank.

    The title is the quoted name OpenSFX gives each sound ("Wind", "Applause"...), without its credits.
    """
    if len(data) < 8:
        raise RecordingsError("not an OpenTTD sound bank: too short")
    first = struct.unpack_from("<I", data, 0)[0] & ~_CAT_NEW_FORMAT_BIT
    count = first // 8
    if count == 0 or first > len(data):
        raise RecordingsError("not an OpenTTD sound bank: bad table")
    out: dict[str, bytes] = {}
    for i in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= ~_CAT_NEW_FORMAT_BIT
        if offset + size > len(data) or size == 0:
            raise RecordingsError(f"OpenTTD sound bank entry {i} runs past the file")
        name_len = data[offset]
        raw_title = data[offset + 1: offset + 1 + name_len].rstrip(b"\0").decode("utf-8", errors="replace")
        body = data[offset + 1 + name_len: offset + size]
        if not body.startswith(b"RIFF"):
            continue  # OpenSFX's placeholder entries are empty
        title = raw_title.split('"')[1] if raw_title.count('"') >= 2 else raw_title
        out.setdefault(title, body)
    return out
