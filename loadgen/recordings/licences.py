"""loadgen/RECORDINGS.md, written from the catalogue so the two cannot disagree (a test compares them)."""

from __future__ import annotations

from .catalogue import (CLIPS, PACKAGES, PIPER_VOICE, BabbleSource, Clip, FileSource, SynthSource,
                        TypingSource, clip_licence)

__all__ = ["licences_markdown"]

_HEADER = """\
# Recordings used by tests and benchmarks

Written by `python -m loadgen.recordings --licences` from `loadgen/recordings/catalogue.py`; do not edit
by hand. The audio is not in the repository: `loadgen.recordings.fetch()` downloads the pinned Debian
packages below, checks each .deb's sha256, converts the clips to 8 kHz mu-law, and keeps each package's
Debian copyright file beside them in its cache (`licences/<package>.copyright`).

Levels are set per category (speech, words, tones, music: -26 dBFS active level; noise beds: -36 dBFS
RMS; transients: -6 dBFS peak). Nothing else is changed, except that a stretch cut from a longer file
gets 5 ms fades at the cut.

Not found in any package, and what stands in for it:
- a cough or sneeze: `burp` (Sonic Pi) and `laugh` (Tux Paint) are the short human non-speech sounds;
  `crowd_oooh` (OpenSFX) is a crowd's voice without words;
- a dog: `crow_caw` (Sonic Pi) is the animal call; rain: `line_hiss` (vinyl hiss) is the steady
  broadband bed, `wind` the weather one;
- backchannels other than "right", and "stop" / "hold on": spoken by the project's Piper voice
  (marked synthesized below). Note that it is the agent's own voice.
"""


def _where(src: FileSource) -> str:
    where = f"`{src.path}`"
    if src.member is not None:
        where += f' sound "{src.member}"'
    if src.start is not None or src.end is not None:
        where += f" {src.start or 0:g}-{src.end if src.end is not None else 'end'} s"
    return where


def _clip_line(clip: Clip) -> str:
    src = clip.source
    if isinstance(src, FileSource):
        what = _where(src)
    elif isinstance(src, BabbleSource):
        what = f"{len(src.talkers)} talkers overlapped, {src.seconds:g} s"
    elif isinstance(src, TypingSource):
        what = f"{len({p.path for pair in src.keys for p in pair}) // 2} keys at a typing rhythm, {src.seconds:g} s"
    else:
        what = f'synthesized: "{src.text}"'
    parts = [f"`{clip.name}` ({clip.category.value}): {what}", f"licence {clip_licence(clip)}"]
    if clip.credit:
        parts.append(clip.credit)
    if clip.transcript is not None:
        parts.append(f'transcript "{clip.transcript}"')
    if clip.note:
        parts.append(clip.note)
    return "- " + "; ".join(parts)


def licences_markdown() -> str:
    out = [_HEADER]
    for pkg in PACKAGES:
        out.append(f"\n## {pkg.name} {pkg.version}\n")
        out.append(f"Licence: {pkg.licence}. .deb sha256 `{pkg.sha256}`.\n")
        if pkg.documents:
            out.append("Also kept: " + ", ".join(f"`{d}`" for d in pkg.documents) + ".\n")
        taken = [c for c in CLIPS if pkg.name in c.packages]
        if taken:
            out.extend(_clip_line(c) for c in taken if isinstance(c.source, FileSource))
            made = [c.name for c in taken if not isinstance(c.source, FileSource)]
            if made:
                out.append("- also in the made clips " + ", ".join(f"`{n}`" for n in made))
    synth = [c for c in CLIPS if isinstance(c.source, SynthSource)]
    out.append(f"\n## Synthesized with Piper ({PIPER_VOICE}, en_US-joe-medium)\n")
    out.extend(_clip_line(c) for c in synth)
    made = [c for c in CLIPS if isinstance(c.source, (BabbleSource, TypingSource))]
    out.append("\n## Made from the recordings above\n")
    out.extend(_clip_line(c) for c in made)
    return "\n".join(out) + "\n"
