"""The slot extraction on what STT engines actually write.

tests/dialog/corpus/stt_corpus.json holds what the offline whisper engine wrote for every phrasing
(corpus/phrasings.py) spoken by every corpus voice over the telephone path; `expect` is what the
caller meant. Every faithful transcript (it still holds the words that carry the meaning:
corpus/check.py) must be understood as meant; over the whole corpus, whisper's losses included, the
share understood must not fall. The Deepgram cases are the written forms its smart formatting and
numerals produce.
"""

from __future__ import annotations

import pytest

from dialog.intents import classify
from dialog.slots import Question
from tests.dialog.corpus.check import (
    GUARD_LOSSES, NOT_FAITHFUL, classify_in_context, entry_mismatches, load, mismatches, must_be_understood,
    summary,
)
from tests.dialog.corpus.phrasings import DEEPGRAM_FORMS, NOW, PHRASINGS, RECORDED_PHRASINGS
from tests.dialog.corpus.voices import BY_NAME, VOICES, Synthesizer

CORPUS = load()
ENTRIES = CORPUS["entries"]
# The share of the corpus understood as the caller meant it, whisper's losses included (measured on
# this corpus: docs/understanding.md). A change to the extraction must not lower it.
MIN_UNDERSTOOD_SHARE = 0.65


def _phrasings(voice) -> list[tuple[str, str, str, dict]]:
    return RECORDED_PHRASINGS if voice.recorded else PHRASINGS


def test_the_corpus_is_every_phrasing_in_every_voice() -> None:
    wanted = [(p[0], v.name) for v in VOICES for p in _phrasings(v)]
    assert sorted((e["id"], e["voice"]) for e in ENTRIES) == sorted(wanted)
    for e in ENTRIES:  # the stored phrasing is the one spoken
        phrasings = _phrasings(BY_NAME[e["voice"]])
        assert (e["spoken"], e["asked"], e["expect"]) == next(p[1:] for p in phrasings if p[0] == e["id"])


FAITHFUL = [e for e in ENTRIES if must_be_understood(e)]


@pytest.mark.parametrize("entry", FAITHFUL, ids=[f"{e['voice']}:{e['id']}" for e in FAITHFUL])
def test_a_faithful_transcript_is_understood(entry: dict) -> None:
    assert entry_mismatches(entry) == [], entry["heard"]


def test_the_hand_read_exceptions_are_current() -> None:
    by_key = {(e["voice"], e["id"]): e for e in ENTRIES}
    for key, heard in {**NOT_FAITHFUL, **GUARD_LOSSES}.items():
        assert by_key[key]["heard"] == heard, key
    for key in GUARD_LOSSES:
        assert by_key[key]["rejected"], key


@pytest.mark.parametrize(("text", "asked", "expect"), DEEPGRAM_FORMS, ids=[c[0] for c in DEEPGRAM_FORMS])
def test_deepgram_written_forms(text: str, asked: str, expect: dict) -> None:
    assert mismatches(classify_in_context(text, asked), expect) == []


def test_the_share_understood_does_not_fall() -> None:
    assert summary()["share"] >= MIN_UNDERSTOOD_SHARE


@pytest.mark.parametrize(("text", "question", "expect"), [
    ("230", Question.TIME, {"time": "14:30"}),
    ("230", None, {}),  # read alone, a number is not a time without some sign that it is one
    ("two thirty", Question.TIME, {"time": "14:30"}),
    ("16", Question.TIME, {"time": "16:00"}),
    ("16", Question.DATE, {"date": "2026-12-16"}),
    ("the 16", Question.DATE, {"date": "2026-12-16"}),
    ("the 16", None, {}),
    ("4", Question.TIME, {"time": "16:00"}),
    ("4", Question.DATE, {"date": "2026-12-04"}),
    ("4", None, {"time": "16:00"}),  # as before: a bare hour
])
def test_the_question_asked_settles_a_bare_answer(text: str, question: Question | None, expect: dict) -> None:
    assert mismatches(classify(text, NOW, question), expect) == []


# ---------------------------------------------------------------- a sample, live

# Every voice speaks this many corpus phrasings again in the test, through whisper, as a call would.
LIVE_PER_VOICE = 2
# Whisper's int8 kernels can round differently on another CPU; on the machines this project runs on
# the transcripts are bit-identical, and a drift past this share means the corpus must be rebuilt.
MAX_LIVE_DRIFT = 0.25


def _live_sample() -> list[dict]:
    """A spread of faithful entries: different phrasings for each voice, the same ones every run."""
    sample = []
    for v, voice in enumerate(VOICES):
        mine = [e for e in FAITHFUL if e["voice"] == voice.name]
        step = max(1, len(mine) // LIVE_PER_VOICE)
        sample += [mine[(v * 7 + k * step) % len(mine)] for k in range(LIVE_PER_VOICE)]
    return sample


def test_a_sample_regenerated_live_reads_the_same(whisper) -> None:
    synth = Synthesizer()
    drifted, wrong = [], []
    for entry in _live_sample():
        heard = whisper.transcribe_checked(synth.telephone(BY_NAME[entry["voice"]], entry["spoken"]))
        if heard.heard != entry["heard"]:
            drifted.append((entry["voice"], entry["id"], entry["heard"], heard.heard))
            continue
        if heard.rejected or mismatches(classify_in_context(heard.text, entry["asked"]), entry["expect"]):
            wrong.append((entry["voice"], entry["id"], heard))
    assert wrong == []
    assert len(drifted) <= MAX_LIVE_DRIFT * len(VOICES) * LIVE_PER_VOICE, drifted
