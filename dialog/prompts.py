"""What the agent says: one short, plain-English template list per prompt key.

A key names a template, stably, so the gateway can cache its audio or answer it quickly
(`DialogReply.prompt_key`). Where a key has several variants, the same key used again in a row
takes the next one, so a caller who did not understand the question hears it in other words
rather than the same words louder. Text is spoken: no markup, no URLs, no symbols a TTS engine would read out, 1-3 sentences.

Fields: {business} {date} {time} {when} {offer} {asked} {hours} {days} {closed} {grid} {languages}.
The same keys in Spanish, French, German and Italian are in `dialog.prompts_i18n`; a call in one of
those languages is told its prompts there (`language`), with its fields said in it (dialog.languages).
"""

from __future__ import annotations

from typing import Mapping

PROMPTS: Mapping[str, tuple[str, ...]] = {
    "greet": ("Hi, thanks for calling {business}. Would you like to book an appointment?",),
    "ask_date": (
        "Sure. What day would you like to come in?",
        "Which day suits you best? For example, tomorrow, or next Monday.",
        "We're open {days}, {hours}. Which day would you like?",
    ),
    "ask_date_for_time": (
        "Okay, {time}. What day would you like that?",
        "Got it, {time}. Which day should that be?",
    ),
    "ask_time": (
        "Great, {date}. What time works for you?",
        "And what time on {date}? We're open {hours}.",
    ),
    "confirm": (
        "So that's {when}. Shall I book it? You can also press 1 to confirm, or 2 to change it.",
        "Just to check, that's {when}. Is that right?",
    ),
    "change_ask": (
        "No problem. What day and time would work better?",
        "Okay. Tell me the day or the time you'd like instead.",
    ),
    "taken_offer": ("Sorry, {asked} is taken. The nearest free time is {offer}. Does that work?",),
    "hours_offer": ("We're open {days}, {hours}. The nearest free time is {offer}. Would that work?",),
    "closed_offer": ("We're closed on {closed}. The nearest free time is {offer}. Would that work?",),
    "past_offer": ("That time has already passed. The next free time is {offer}. Would that work?",),
    "offgrid_offer": ("Appointments start every {grid}. The nearest free time is {offer}. Would that work?",),
    "race_offer": (
        "Sorry, someone just took that time. The nearest free time is {offer}. Shall I book that instead?",),
    "past_date": ("That date has already passed. Which day would you like instead?",),
    "closed_day": ("Sorry, we're closed on {closed}. We're open {days}. Which day would you like?",),
    "no_free": ("Sorry, I couldn't find a free time near then. What other day would suit you?",),
    "booked": ("You're booked for {when}. Thanks for calling {business}, goodbye!",),
    "goodbye": ("Okay, thanks for calling {business}. Goodbye!",),
    "ended": ("Thanks again for calling. Goodbye!",),
    "handoff": (
        "I'm sorry, I'm having trouble understanding. Please call back a little later. Goodbye.",),
    "transfer": (
        "I'm sorry, I'm having trouble understanding. Let me put you through to someone who can help.",),
    # Re-asks after a misunderstanding: other words each time.
    "reask_greeting": (
        "Sorry, I didn't catch that. Would you like to book an appointment?",
        "I can book an appointment for you. Would you like me to find you a time?",
        "Shall we book you an appointment? Just say yes or no.",
    ),
    "reask_date": (
        "Sorry, I didn't catch the day. Which day would you like?",
        "What day suits you? You could say tomorrow, or a day like Thursday.",
        "We're open {days}. Could you tell me the date you'd like, such as December 8th?",
    ),
    "reask_time": (
        "Sorry, what time would you like on {date}?",
        "What time suits you? We're open {hours}.",
        "Could you tell me a time, like 10 am or 2:30 pm?",
    ),
    "reask_confirm": (
        "Sorry, shall I book {when}? Please say yes or no.",
        "Should I go ahead with {when}? You can press 1 for yes, or 2 to change it.",
        "Would {when} work for you? Yes or no?",
    ),
    "vague_date": (
        "Sure. Which day exactly would you like? For example, Monday or Tuesday.",
        "Which day would that be? You could say a weekday, or a date like the 8th.",
    ),
    "vague_time": (
        "Sure. What time exactly would suit you? We're open {hours}.",
        "What time would that be? For example, 10 am or 2:30 pm.",
    ),
    # A yes or no while a day or time was asked for: what is still needed, in one sentence.
    "need_date": (
        "I still need a day for your appointment: which day would suit you?",
        "To book it I just need the day, such as tomorrow or next Monday.",
    ),
    "need_time": (
        "I still need a time for {date}: what time would suit you?",
        "To book {date} I just need a time, such as 10 am or 2:30 pm.",
    ),
    "invalid_date": ("Hmm, I don't think that date exists. Which day would you like?",),
    "invalid_time": (
        "Hmm, that doesn't sound like a time I can book. What time would you like? We're open {hours}.",),
    "failure": ("Sorry, I had a little trouble on my end.",),  # followed by the current question
    "resume": ("Sorry about that, we got cut off.",),  # a resumed call: followed by the current question
    # A call handed over on purpose (a deploy), at a quiet moment: no apology, only the current question.
    "handover": ("",),
    # A cut-off call came back, but where it was could not be found: start again, politely.
    "greet_lost": ("Sorry about that, we got cut off, and I've lost my place. Let's start again. "
                   "Would you like to book an appointment?",),
    # The booking could not be saved (the store refused it): nothing was booked; the slot stays offered.
    "store_failed": ("I couldn't save that booking just now. Shall I try again to book {when}?",),
    "correction_ack": ("No problem.",),  # before the reply to a correction
    # Said as an LLM starts recording details through its tool, while the arguments stream: the
    # machine's outcome follows. Claims nothing, and is rendered at startup like every fixed prompt.
    "tool_ack": ("Okay.",),
    # A caller speaking a language not in LANGUAGES (dialog.languages): one sentence, in the default
    # language, then the question they are answering.
    "unsupported_language": ("Sorry, I can only speak {languages}.",),
    # A question the business's files do not answer (dialog.knowledge), said before the waiting question.
    "knowledge_unknown": ("I'm sorry, I don't have that information.",),
}

# The question each asking state puts, for a re-ask after a provider failure or a repeat with
# nothing said yet.
QUESTIONS = {
    "greeting": "Would you like to book an appointment?",
    "collect_date": "What day would you like?",
    "collect_time": "What time would you like on {date}?",
    "confirmation": "Shall I book {when}?",
}


def templates(key: str, language: str = "en") -> tuple[str, ...]:
    """A prompt's templates in `language` (dialog.prompts_i18n), English where it has none."""
    if language != "en":
        from dialog.prompts_i18n import PROMPTS_BY_LANGUAGE

        found = PROMPTS_BY_LANGUAGE.get(language, {}).get(key)
        if found:
            return found
    return PROMPTS[key]


def render(key: str, fields: Mapping[str, str], variant: int = 0, language: str = "en") -> str:
    options = templates(key, language)
    return options[variant % len(options)].format_map(fields)


def question(state_value: str, fields: Mapping[str, str], language: str = "en") -> str:
    questions = QUESTIONS
    if language != "en":
        from dialog.prompts_i18n import QUESTIONS_BY_LANGUAGE

        questions = QUESTIONS_BY_LANGUAGE.get(language, QUESTIONS)
    return questions.get(state_value, questions["greeting"]).format_map(fields)
