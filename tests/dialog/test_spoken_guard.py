"""The model's own words never state a booking outcome: only the state machine's do."""

from __future__ import annotations

from dialog.spoken_guard import OutcomeGuard, claims_outcome


def test_outcome_claims_are_recognised() -> None:
    for claim in ("You're booked for Tuesday at 3.", "That's confirmed!", "I've cancelled it.",
                  "Tuesday at 3 is free.", "Sorry, that time is taken.", "It's not available.",
                  "I\u2019ve moved your appointment.", "You're all set.", "See you then!",
                  "I've rescheduled you for Monday."):
        assert claims_outcome(claim), claim
    for answer in ("I'm sorry, I can't help with deliveries;", "We're open Monday to Friday, 9 am to 5 pm.",
                   "Would you like to book one?", "Shall I book that for you?", "Okay,",
                   "I can only book appointments."):
        assert not claims_outcome(answer), answer


def test_phrases_pass_as_the_chunker_cuts_them_and_a_claim_silences_the_rest() -> None:
    guard = OutcomeGuard()
    out = []
    for token in ["Sure", ",", " let", " me", " see", ".", " You're", " booked", " for", " 3", " pm", ".",
                  " Anything", " else", "?"]:
        out += guard.push(token)
    out += guard.flush()
    # "Sure," goes as soon as the next word shows it is a phrase; the claim and everything after it stop.
    assert out == ["Sure,", "let me see."]
    assert guard.dropped == ["You're booked for 3 pm.", "Anything else?"]


def test_an_answer_with_no_claim_is_said_whole() -> None:
    guard = OutcomeGuard()
    text = "I'm afraid I can't look up orders from here. Would you like to book an appointment?"
    out = [p for word in text.split(" ") for p in guard.push(word + " ")] + guard.flush()
    assert " ".join(out) == text and guard.dropped == []
