"""The business's own knowledge: callers' questions answered from the operator's files.

Operators put their facts in Markdown or text files under `KNOWLEDGE_DIR` (opening hours, address,
parking, prices, policies). At startup every file is cut into passages: a passage is a paragraph or a
list under its nearest heading ("Parking: there is free parking behind the building."), and the
heading goes with it, because operators name a topic once, in the heading. Files under a
`<language>/` folder (`es/`, `fr/`...) or named `*.<language>.md` are in that language; the others
are in the default language.

Retrieval is BM25 (`bm25s`, over sparse matrices) on stemmed words without stop words (PyStemmer's
Snowball stemmers and bm25s' stop-word lists, per language), one index per language. It is lexical,
and that is what the offline path can check: a question is *covered* by a passage when at least
`MIN_COVERAGE` of the question's topic words (its stemmed words without stop words and without the
words that frame a question rather than name its topic: "tomorrow", "please", "tell"...) are in the
passage or its heading. "Do you take walk-ins?" against a file that only says "take the lift to the
second floor" covers "take" but not "walk" or "ins": not covered, so declined rather than answered
with the lift. A question in a language with no files of its own is also looked up in the default
language's files (names, numbers and shared words can match; the LLM reads across languages, the
offline path is English only anyway).

How the dialog uses a lookup (`dialog.llm_responder`, `dialog.responder`):
- With an LLM, the covered passages (or, when none is covered, the best partial matches) go into the
  turn's one request; the model phrases the answer from them and says it does not know when they do
  not answer the question. No second request, no wait before it beyond the lookup itself.
- Without one, a covered question is answered by reading the one or two sentences of the best
  passage that hold the question's words; an uncovered one is declined in a sentence. Then the
  question the call was waiting on is asked again.

A lookup is CPU work (~0.1-1 ms for hundreds of passages: bench/knowledge.py) and runs in its own
thread, never on the event loop; one slower than `LOOKUP_TIMEOUT_SECONDS` is given up (the turn goes
on without passages) rather than held.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from providers.languages import SUPPORTED, base_code
from dialog.text_clean import clean_for_speech

__all__ = ["Hit", "Knowledge", "KnowledgeBase", "Lookup", "Passage"]

log = logging.getLogger("voicegate.dialog.knowledge")

# A question is covered when at least this share of its topic words is in one passage (with its
# headings): every one of one or two ("Can I bring my dog?" is not answered by "bring your insurance
# card"), two of three ("Can my child come alone?" by "Children under 16 must come with a parent").
# Half was tried first: bench/knowledge.py declined 6 of 9 unanswerable questions with it.
MIN_COVERAGE = 2 / 3
# Passages a lookup returns: an LLM is given at most this many (about 150 tokens of facts).
TOP_K = 3
# A passage longer than this is cut at its list items or sentences: a passage is what one answer
# needs, and a long one dilutes BM25's scores and the LLM's prompt.
MAX_PASSAGE_CHARS = 600
# Bounds on what is read at startup: a knowledge folder is a business's facts, not a document dump.
MAX_FILES = 500
MAX_FILE_BYTES = 1_000_000
KNOWLEDGE_SUFFIXES = (".md", ".markdown", ".txt")
# A lookup that takes longer (a stalled thread pool) is skipped: the turn goes on without passages.
LOOKUP_TIMEOUT_SECONDS = 0.25
# Sentences read aloud from a passage offline: "in one or two sentences".
MAX_READ_SENTENCES = 2

_STEMMERS = {"en": "english", "es": "spanish", "fr": "french", "de": "german", "it": "italian"}
# Words that frame a question or a request rather than name its topic (beyond the stop words):
# a question is not about "tomorrow" or "please". Per language, lower case, unstemmed.
_FRAME_WORDS = {
    "en": "today tomorrow tonight now morning afternoon evening mornings afternoons evenings day days week "
          "weekend time times please thanks thank hello hi hey tell know wondering wonder ask asking need "
          "want like get go could would also still actually usually normally exactly just maybe "
          "take takes accept accepts offer offers have has provide provides goes going gets getting",
    "es": "hoy mañana ahora tarde noche día días semana hora horas vez favor gracias hola decir "
          "saber quería querría necesito puedo podría también normalmente exactamente",
    "fr": "aujourd'hui demain maintenant matin soir jour jours semaine heure heures fois plaît merci "
          "bonjour dire savoir voudrais veux besoin pourrais aussi normalement exactement",
    "de": "heute morgen jetzt abend nachmittag tag tage woche uhr zeit mal bitte danke hallo sagen "
          "wissen möchte möchten brauche könnte auch normalerweise genau",
    "it": "oggi domani adesso ora mattina pomeriggio sera giorno giorni settimana orario volta "
          "favore grazie ciao buongiorno dire sapere vorrei voglio bisogno potrei anche normalmente",
}
# Question words that name a topic, and the words a passage on that topic uses: "Where are you?" is
# about an address even though every word of it is a stop word. Per language, unstemmed.
_QUESTION_TOPICS = {
    "en": {"where": "address located", "much": "cost costs price dollars"},
    "es": {"dónde": "dirección calle", "donde": "dirección calle", "cuánto": "cuesta precio",
           "cuanto": "cuesta precio"},
    "fr": {"où": "adresse rue", "combien": "coûte prix"},
    "de": {"wo": "adresse straße", "viel": "kostet preis", "kostet": "preis"},
    "it": {"dove": "indirizzo via", "quanto": "costa prezzo"},
}
# Plurals no stemmer maps to their singular: "children" and "child" must be one word.
_IRREGULAR = {
    "en": {"children": "child", "people": "person", "women": "woman", "men": "man", "teeth": "tooth",
           "feet": "foot"},
}
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.U)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[^\s])")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


@dataclass(frozen=True, slots=True)
class Passage:
    source: str  # the file, relative to the knowledge folder
    heading: str  # its headings, outermost first ("Opening hours, Holidays")
    text: str  # speakable: markup gone, list items as sentences
    language: str

    @property
    def full(self) -> str:
        """The heading and the text, as the LLM is given it."""
        return f"{self.heading}: {self.text}" if self.heading else self.text


@dataclass(frozen=True, slots=True)
class Hit:
    passage: Passage
    score: float  # BM25
    coverage: float  # share of the question's topic words in the passage

    @property
    def covered(self) -> bool:
        return self.coverage >= round(MIN_COVERAGE, 6)


@dataclass(frozen=True, slots=True)
class Lookup:
    query: str
    language: str
    hits: tuple[Hit, ...] = ()  # best first: covered ones first, then by score
    topic_words: tuple[tuple[str, ...], ...] = ()  # stem groups (`_Analyzer.topic`)
    elapsed_ms: float = 0.0

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None

    @property
    def covered(self) -> bool:
        return bool(self.hits) and self.hits[0].covered

    def passages(self) -> list[Passage]:
        """What an LLM is given: the covered passages, or, when none is, the partial matches."""
        covered = [h.passage for h in self.hits if h.covered]
        return covered or [h.passage for h in self.hits]


class _Analyzer:
    """Words -> stems, per language; stop words and question-frame words known."""

    def __init__(self, language: str) -> None:
        import Stemmer
        from bm25s import stopwords

        self.language = language
        self._stemmer = Stemmer.Stemmer(_STEMMERS[language])
        names = {"en": "STOPWORDS_EN_PLUS", "es": "STOPWORDS_SPANISH", "fr": "STOPWORDS_FRENCH",
                 "de": "STOPWORDS_GERMAN", "it": "STOPWORDS_ITALIAN"}
        self.stop = frozenset(_fold(w) for w in getattr(stopwords, names[language]))
        # Compared as stems: "goes" is as much a frame word as "go".
        self.frame = frozenset(self._stemmer.stemWords([_fold(w) for w in _FRAME_WORDS[language].split()]))
        self.expansions = {_fold(k): v.split() for k, v in _QUESTION_TOPICS[language].items()}
        self.irregular = _IRREGULAR.get(language, {})

    def words(self, text: str) -> list[str]:
        out = []
        for raw in _WORD.findall(_fold(text)):
            for word in raw.split("'"):  # "what's" -> what, s; "l'heure" -> l, heure
                if len(word) > 1 or word.isdigit():
                    out.append(self.irregular.get(word, word))
        return out

    def terms(self, text: str) -> list[str]:
        """Stems of the words that are not stop words: what BM25 indexes and matches."""
        return self._stemmer.stemWords([w for w in self.words(text) if w not in self.stop])

    def query_terms(self, text: str) -> list[str]:
        """A question's terms, with the topic words its question words stand for."""
        extra = [e for w in self.words(text) for e in self.expansions.get(w, ())]
        return self.terms(text) + self._stemmer.stemWords(extra)

    def topic(self, text: str) -> list[tuple[str, ...]]:
        """What a question is about: a group of stems per topic word (no stop or frame words); a
        question word that names a topic ("where") is a group of the words that say it."""
        groups: dict[tuple[str, ...], None] = {}
        for word in self.words(text):
            if word in self.expansions:
                groups[tuple(self._stemmer.stemWords(self.expansions[word]))] = None
            elif word not in self.stop:
                stem = self._stemmer.stemWord(word)
                if stem not in self.frame:
                    groups[(stem,)] = None
        named = {t for group in groups if len(group) > 1 for t in group}  # "where ... located": one topic
        return [g for g in groups if len(g) > 1 or g[0] not in named]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower().replace("\u2019", "'")


@lru_cache(maxsize=8)
def analyzer(language: str) -> _Analyzer:
    return _Analyzer(language)


class _Index:
    def __init__(self, language: str, passages: list[Passage]) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # a debug line per index step is not the call log's

        self.language = language
        self.passages = passages
        an = analyzer(language)
        self.terms = [frozenset(an.terms(p.full)) for p in passages]
        self.heading_terms = [frozenset(an.terms(p.heading)) for p in passages]
        self.bm25 = bm25s.BM25()
        self.bm25.index([an.terms(p.full) or [""] for p in passages], show_progress=False)

    def search(self, text: str, k: int) -> tuple[list[Hit], tuple[tuple[str, ...], ...]]:
        an = analyzer(self.language)
        query = an.query_terms(text)
        topic = tuple(an.topic(text))
        if not query or not self.passages:
            return [], topic
        scores = self.bm25.get_scores(query)
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[: max(k, TOP_K) * 2]
        hits = []
        for i in order:
            score = float(scores[i])
            if score <= 0:
                break
            have = self.terms[i]
            coverage = sum(1 for group in topic if any(t in have for t in group)) / len(topic) if topic else 0.0
            coverage = round(coverage, 6)  # 2/3 is 2/3
            named = sum(1 for group in topic if any(t in self.heading_terms[i] for t in group))
            hits.append((Hit(self.passages[i], score, coverage), named))
        # Covered passages first: the best covered, then those whose headings name the topic (operators
        # name a topic in the heading: "What should I bring to my visit?" is "Before your visit", not a
        # line about the insurance card), then by score; then the partial matches, by score.
        hits.sort(key=lambda hn: (not hn[0].covered, -hn[0].coverage if hn[0].covered else 0.0,
                                  -hn[1] if hn[0].covered else 0, -hn[0].score))
        return [h for h, _ in hits[:k]], topic


@dataclass
class KnowledgeBase:
    """Passages by language, with a BM25 index each. `search` is pure CPU: run it off the loop."""

    default_language: str = "en"
    passages: list[Passage] = field(default_factory=list)
    files: int = 0
    directory: str = ""

    def __post_init__(self) -> None:
        self._indexes: dict[str, _Index] = {}
        by_language: dict[str, list[Passage]] = {}
        for passage in self.passages:
            by_language.setdefault(passage.language, []).append(passage)
        for language, passages in by_language.items():
            self._indexes[language] = _Index(language, passages)

    @classmethod
    def load(cls, directory: str | Path, default_language: str = "en",
             languages: Sequence[str] = SUPPORTED) -> "KnowledgeBase":
        """Read every Markdown or text file under `directory`. A missing folder is a ValueError (a
        misconfigured KNOWLEDGE_DIR must not pass for an empty knowledge base)."""
        root = Path(directory)
        if not root.is_dir():
            raise ValueError(f"KNOWLEDGE_DIR {str(directory)!r} is not a folder")
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in KNOWLEDGE_SUFFIXES)
        if len(paths) > MAX_FILES:
            log.warning("knowledge folder has %d files; reading the first %d", len(paths), MAX_FILES)
            paths = paths[:MAX_FILES]
        passages: list[Passage] = []
        for path in paths:
            relative = path.relative_to(root).as_posix()
            language = _language_of(relative, default_language, languages)
            if path.stat().st_size > MAX_FILE_BYTES:
                log.warning("knowledge file %s is over %d bytes: skipped", relative, MAX_FILE_BYTES)
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            passages += split_passages(text, relative, language, markdown=path.suffix.lower() != ".txt")
        return cls(default_language, passages, len(paths), str(root))

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._indexes)

    def describe(self) -> dict[str, object]:
        return {"dir": self.directory, "files": self.files, "passages": len(self.passages),
                "languages": {lang: len(index.passages) for lang, index in self._indexes.items()}}

    def search(self, text: str, language: str | None = None, k: int = TOP_K) -> Lookup:
        started = time.perf_counter()
        language = language if language in self._indexes else None
        order = [language] if language else []
        if self.default_language not in order and self.default_language in self._indexes:
            order.append(self.default_language)  # files in the default language serve every caller
        hits: list[Hit] = []
        topic: tuple[tuple[str, ...], ...] = ()
        for code in order:
            found, words = self._indexes[code].search(text, k)
            topic = topic or words
            if any(h.covered for h in found):
                hits = found
                break
            hits = hits or found
        return Lookup(text, language or self.default_language, tuple(hits), topic,
                      (time.perf_counter() - started) * 1000)

    def read(self, lookup: Lookup, max_sentences: int = MAX_READ_SENTENCES) -> str:
        """The one or two sentences of the best covered passage that hold the question's words, in
        the passage's order: what the offline path says. "" when nothing covers the question."""
        if not lookup.covered:
            return ""
        passage = lookup.hits[0].passage
        an = analyzer(passage.language)
        topic = {t for group in an.topic(lookup.query) for t in group} or set(an.terms(lookup.query))
        sentences = [s for s in _SENTENCE.split(passage.text) if s.strip()]
        ranked = sorted(range(len(sentences)),
                        key=lambda i: (-len(topic & set(an.terms(sentences[i]))), i))
        chosen = [i for i in ranked[:max_sentences] if topic & set(an.terms(sentences[i]))] or [0]
        if len(chosen) > 1 and len(topic & set(an.terms(sentences[chosen[1]]))) == 0:
            chosen = chosen[:1]
        return " ".join(_sentence(sentences[i]) for i in sorted(chosen))


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


def _language_of(relative: str, default: str, languages: Sequence[str]) -> str:
    parts = relative.split("/")
    if len(parts) > 1 and base_code(parts[0]) in languages:
        return base_code(parts[0])
    stem_parts = parts[-1].split(".")
    if len(stem_parts) >= 3 and stem_parts[-2].lower() in languages:
        return stem_parts[-2].lower()
    return default


def split_passages(text: str, source: str, language: str, markdown: bool = True) -> list[Passage]:
    """A file's passages: blocks (paragraphs, lists) under their headings (module doc). A passage
    carries the path of headings above it: "We close between Christmas and New Year" under "Holidays"
    under "Opening hours" answers "Are you open over Christmas?"."""
    path: list[tuple[int, str]] = []  # (level, heading), outermost first
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] = []

    def close() -> None:
        if current:
            heading = ", ".join(h for _, h in path)
            if blocks and blocks[-1][0] == heading:  # another paragraph of the same section
                blocks[-1][1].append("")
                blocks[-1][1].extend(current)
            else:
                blocks.append((heading, list(current)))
            current.clear()

    def enter(level: int, title: str) -> None:
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, clean_for_speech(title).rstrip(":")))

    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _HEADING.match(line) if markdown else None
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if match:
            close()
            enter(len(match.group(1)), match.group(2))
        elif markdown and line.strip() and _SETEXT.match(nxt) and not _LIST_ITEM.match(line):
            close()
            enter(1 if nxt.strip().startswith("=") else 2, line)
        elif markdown and _SETEXT.match(line) and not current:
            continue
        elif not line.strip():
            close()
        else:
            current.append(line)
    close()
    passages: list[Passage] = []
    for head, block in blocks:
        for text_part in _block_texts(block):
            if text_part:
                passages.append(Passage(source, head, text_part, language))
    return passages


def _block_texts(block: list[str]) -> Iterable[str]:
    """A block as speakable text; list items become sentences; a long block is cut in parts."""
    items: list[str] = []
    for line in block:
        if not line.strip():  # between two paragraphs of a section
            items.append("")
        elif _LIST_ITEM.match(line) or not items or not items[-1]:
            items.append(_LIST_ITEM.sub("", line))
        else:
            items[-1] += " " + line.strip()  # a wrapped line of the paragraph or item above
    sentences = [_sentence(clean_for_speech(item)) for item in items if clean_for_speech(item)]
    part = ""
    for sentence in sentences:
        if part and len(part) + 1 + len(sentence) > MAX_PASSAGE_CHARS:
            yield part
            part = ""
        part = f"{part} {sentence}".strip()
    if part:
        yield part


class Knowledge:
    """The knowledge base as calls use it: lookups in a thread of their own, bounded in time."""

    def __init__(self, base: KnowledgeBase, timeout: float = LOOKUP_TIMEOUT_SECONDS) -> None:
        self.base = base
        self.timeout = timeout
        # One thread: a lookup is ~1 ms of CPU; a second would only compete with the loop and whisper.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="knowledge")
        self.timeouts = 0

    async def lookup(self, text: str, language: str | None = None) -> Lookup | None:
        """The passages for `text`, or None if the lookup failed or took too long."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                return await loop.run_in_executor(self._pool, self.base.search, text, language)
        except TimeoutError:
            self.timeouts += 1
            log.warning("knowledge lookup took over %.0f ms: the turn goes on without it", self.timeout * 1000)
        except Exception:  # a bug in a lookup must not take the turn down
            log.exception("knowledge lookup failed")
        return None

    def read(self, lookup: Lookup) -> str:
        return self.base.read(lookup)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
