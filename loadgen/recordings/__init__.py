"""Real recordings for tests and benchmarks: human speech, noise beds, transients, tones, music on hold.

    from loadgen.recordings import fetch, mix_at_snr
    cat = fetch()                                    # downloads and converts once, then reads the cache
    speech = cat.audio("allison_please_hold")        # 8 kHz mu-law bytes, as Twilio carries them
    noisy = mix_at_snr(speech, cat.audio("babble_6"), snr_db=10)
    cat.transcript("allison_please_hold")            # "Please hold while we try to connect you."
    [c.name for c in cat.clips("transient")]         # door, thud, burp, laugh, ...

The sources are Debian packages pinned by version and sha256 (catalogue.py), converted to 8 kHz
mu-law at a level fixed per category (convert.py), with each package's copyright file kept beside
the clips in the cache; loadgen/RECORDINGS.md lists them. `python -m loadgen.recordings --list` fetches
and prints the catalogue.
"""

from __future__ import annotations

from .catalogue import CLIPS, PACKAGES, Category, Clip, Package
from .convert import LEVELS, Level
from .debian import ChecksumError, DownloadError, RecordingsError
from .signals import (
    SAMPLE_RATE,
    active_level_dbfs,
    active_span,
    concat_with_pauses,
    delayed_echo,
    fade,
    loop_to,
    mix_at_snr,
    overlay,
    peak_dbfs,
    rms_dbfs,
    scale_db,
    to_pcm,
)
from .store import Catalogue, ClipInfo, default_cache_dir, fetch

__all__ = [
    "CLIPS",
    "LEVELS",
    "PACKAGES",
    "SAMPLE_RATE",
    "Catalogue",
    "Category",
    "ChecksumError",
    "Clip",
    "ClipInfo",
    "DownloadError",
    "Level",
    "Package",
    "RecordingsError",
    "active_level_dbfs",
    "active_span",
    "concat_with_pauses",
    "default_cache_dir",
    "delayed_echo",
    "fade",
    "fetch",
    "loop_to",
    "mix_at_snr",
    "overlay",
    "peak_dbfs",
    "rms_dbfs",
    "scale_db",
    "to_pcm",
]
