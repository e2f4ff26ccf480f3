"""The languages a call can be held in, and how a call follows its caller from one to another.

`LANGUAGES` (env) lists the supported ones, the first being the default: the greeting's language, and
the one an unsupported caller is answered in. Each supported language has its fixed prompts
(`dialog.prompts_i18n`), its way of saying dates, times and opening hours (here, through Babel's CLDR
data), its question words (`is_question`, for the knowledge base) and its stemmer and stop words
(`dialog.knowledge`).

How a call switches (`CallLanguage.hear`): the STT engine labels each final transcript with the
language most of its words were in (Deepgram's multilingual mode: `providers.deepgram_stt`). A turn
with at least `switch_min_words` words in a supported language other than the call's moves the call
to it: from that reply on, the prompts, the LLM's words and the TTS voice's language are that
language's. One word is not enough ("Okay", "Hola", a name are said across languages), except on the
caller's first turn, where the greeting in the default language is all the call has to go on. A turn
in a language not supported leaves the call where it is and is answered, in the default language, by
one sentence saying which languages the agent speaks (`unsupported_language` prompt), then the
question the caller is answering.

Offline (whisper + the rule-based dialog + Piper) every call is English: see `available_languages`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

from dialog import schedule
from dialog.schedule import DialogSettings
from providers.languages import SUPPORTED, base_code, parse_languages  # noqa: F401  (re-exported)

# SUPPORTED: the languages whose prompts, dates and question words this module and dialog.prompts_i18n
# know. All five are in Deepgram nova-3's multilingual model and ElevenLabs' Flash v2.5.
DEFAULT_LANGUAGES = ("en",)
# The names of each language in each language: the unsupported-language sentence lists them.
NAMES: dict[str, dict[str, str]] = {
    "en": {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian"},
    "es": {"en": "inglés", "es": "español", "fr": "francés", "de": "alemán", "it": "italiano"},
    "fr": {"en": "anglais", "es": "espagnol", "fr": "français", "de": "allemand", "it": "italien"},
    "de": {"en": "Englisch", "es": "Spanisch", "fr": "Französisch", "de": "Deutsch", "it": "Italienisch"},
    "it": {"en": "inglese", "es": "spagnolo", "fr": "francese", "de": "tedesco", "it": "italiano"},
}
_AND = {"en": "and", "es": "y", "fr": "et", "de": "und", "it": "e"}
# A detected language with fewer words than this in a turn does not move the call (module doc). Two:
# "Okay", "Sí", "Merci" alone are said by callers of any language; two words of one are a choice.
SWITCH_MIN_WORDS = 2


def say_list(items: list[str], language: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {_AND.get(language, 'and')} " + items[-1]


def say_languages(codes: tuple[str, ...], language: str) -> str:
    """'English, Spanish and French', in `language`."""
    return say_list([NAMES[language][c] for c in codes], language)


@dataclass
class CallLanguage:
    """The language one call is held in, and the rule that moves it (module doc)."""

    supported: tuple[str, ...] = DEFAULT_LANGUAGES
    current: str = ""
    switch_min_words: int = SWITCH_MIN_WORDS
    turns_heard: int = 0

    def __post_init__(self) -> None:
        self.current = self.current or self.default

    @property
    def default(self) -> str:
        return self.supported[0]

    @property
    def multilingual(self) -> bool:
        return len(self.supported) > 1

    def hear(self, detected: str, text: str) -> str:
        """A caller turn the STT engine heard in `detected` (a BCP-47 tag; "" when it does not say).
        Returns "switched", "unsupported" or "" (the call stays in its language)."""
        first = self.turns_heard == 0
        self.turns_heard += 1
        code = base_code(detected) if detected else ""
        if not code or code == self.current:
            return ""
        words = len(re.findall(r"\w+", text))
        if words < self.switch_min_words and not (first and words >= 1):
            return ""
        if code not in self.supported:
            return "unsupported"
        self.current = code
        return "switched"


# ---------------------------------------------------------------- saying dates and times

# Babel date patterns, as a receptionist would say a day: the weekday, the day and the month.
_DATE_PATTERNS = {"es": "EEEE d 'de' MMMM", "fr": "EEEE d MMMM", "de": "EEEE, 'den' d. MMMM", "it": "EEEE d MMMM"}
_YEAR_PATTERNS = {"es": " 'de' y", "fr": " y", "de": " y", "it": " y"}
# How a time of day is said before the hour in each language's prompts ("at 3 pm" is "a las 15:00").
_NOON = {"es": "mediodía", "fr": "midi", "de": "Mittag", "it": "mezzogiorno"}


@lru_cache(maxsize=4096)
def say_date(day: date, today: date | None, language: str) -> str:
    if language == "en":
        return schedule.say_date(day, today)
    from babel.dates import format_date

    pattern = _DATE_PATTERNS[language]
    if today is not None and (day - today).days > 300:
        pattern += _YEAR_PATTERNS[language]
    return format_date(day, pattern, locale=language)


def say_time(hour: int, minute: int, language: str) -> str:
    """'15:30' in the 24-hour clock every one of these languages uses on the phone; noon by name."""
    if language == "en":
        return schedule.say_time(hour, minute)
    if (hour, minute) == (12, 0):
        return _NOON[language]
    return f"{hour}:{minute:02d}" if language != "de" else f"{hour}:{minute:02d} Uhr"


_AT = {"es": "a las", "fr": "à", "de": "um", "it": "alle"}


def say_when(start: datetime, today: date | None, language: str) -> str:
    if language == "en":
        return schedule.say_when(start, today)
    at = say_time(start.hour, start.minute, language)
    joiner = _AT[language] if not (start.hour, start.minute) == (12, 0) else {"es": "a", "fr": "à", "de": "am",
                                                                              "it": "a"}[language]
    return f"{say_date(start.date(), today, language)} {joiner} {at}"


_TO = {"es": "a", "fr": "à", "de": "bis", "it": "alle"}
_FROM = {"es": "de", "fr": "de", "de": "von", "it": "dalle"}


def say_hours(settings: DialogSettings, language: str) -> str:
    """'de 9:00 a 17:00' ('9 am to 5 pm' in English)."""
    if language == "en":
        return schedule.say_hours(settings)
    opens = say_time(settings.open_hour % 24, 0, language)
    closes = say_time(settings.close_hour % 24, 0, language)
    return f"{_FROM[language]} {opens} {_TO[language]} {closes}"


@lru_cache(maxsize=64)
def weekday_name(weekday: int, language: str) -> str:
    if language == "en":
        return schedule.WEEKDAY_NAMES[weekday]
    from babel.dates import get_day_names

    return str(get_day_names("wide", locale=language)[weekday])


def say_days(settings: DialogSettings, language: str) -> str:
    """'de lunes a viernes', or a list for a broken week."""
    if language == "en":
        return schedule.say_days(settings)
    days = sorted(set(settings.open_weekdays))
    names = [weekday_name(d, language) for d in days]
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{_FROM[language]} {names[0]} {_TO[language]} {names[-1]}"
    return say_list(names, language)


def say_grid(slot_minutes: int, language: str) -> str:
    """How often appointments start: 'hour' / '30 minutes' ('hora' / '30 minutos')."""
    hour = {"en": "hour", "es": "hora", "fr": "heure", "de": "Stunde", "it": "ora"}[language]
    minutes = {"en": "minutes", "es": "minutos", "fr": "minutes", "de": "Minuten", "it": "minuti"}[language]
    return hour if slot_minutes == 60 else f"{slot_minutes} {minutes}"


def say_weekday_plural(weekday: int, language: str) -> str:
    """'Sundays' / 'los domingos': for "we're closed on {closed}"."""
    if language == "en":
        return schedule.WEEKDAY_NAMES[weekday] + "s"
    name = weekday_name(weekday, language)
    return {"es": f"los {name}", "fr": f"le {name}", "de": f"{name}s", "it": f"di {name}"}[language]


# ---------------------------------------------------------------- questions

# A turn that asks something: its first words (after an optional greeting or "and") or a question
# mark (Deepgram punctuates; whisper often does). For the knowledge base: a question the booking rules
# cannot act on is looked up, not re-asked.
_QUESTION_START = {
    "en": r"(?:what|what's|whats|when|where|where's|which|who|why|how|is|are|was|were|do|does|did|can|could|"
          r"will|would|should|shall|may|have|has)",
    "es": r"(?:qué|que|cuándo|cuando|dónde|donde|adónde|cuál|cual|cuáles|quién|cómo|como|por qué|cuánto|cuanto|"
          r"cuánta|cuántos|tienen|tiene|hay|puedo|pueden|aceptan|abren|están|es|son|hacen)",
    "fr": r"(?:qu'est-ce|qu'est ce|que|quand|où|quel|quelle|quels|quelles|comment|pourquoi|combien|est-ce|"
          r"est ce|avez|acceptez|pouvez|faites|ouvrez|êtes|peut-on|puis-je)",
    "de": r"(?:was|wann|wo|wohin|welche|welcher|welches|wer|wie|warum|wieso|haben|gibt|kann|können|nehmen|"
          r"sind|ist|hat|muss|bieten|akzeptieren)",
    "it": r"(?:che|cosa|quando|dove|quale|quali|chi|come|perché|perche|quanto|quanti|avete|c'è|ce|posso|"
          r"accettate|siete|è|fate|aprite)",
}
_LEAD_IN = r"(?:(?:hi|hello|hey|yes|yeah|okay|ok|so|and|also|oh|um|uh|hola|sí|si|y|oui|et|bonjour|ja|und|"
_LEAD_IN += r"hallo|ciao|buongiorno|e|also|alors|pues|bueno)[,.]?\s+)*"
_QUESTION_RES = {code: re.compile(r"^\s*[¿¡]?" + _LEAD_IN + words + r"\b", re.I) for code, words in _QUESTION_START.items()}


def is_question(text: str, language: str = "en") -> bool:
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.endswith("?") or stripped.startswith("¿"):
        return True
    pattern = _QUESTION_RES.get(language) or _QUESTION_RES["en"]
    return bool(pattern.search(stripped))
