"""What callers say, written as they would say it, with what they meant.

Each phrasing is spoken by every corpus voice and transcribed by the offline whisper engine; the
corpus keeps what whisper wrote beside `expect` below. Expected values are written by hand against
the corpus's fixed `NOW` (Wednesday 18 November 2026, 10 am in New York), never computed by the
code under test.

`asked` is the question the agent had just put (`dialog.slots.Question`): the same words mean
different things after "What time?" and after "Which day?".

`expect` holds what the turn must be understood as:
- "date" (ISO) and/or "time" ("HH:MM", compared without the am/pm-guess flag);
- "intent" for turns that carry no slot (affirm, deny, repeat, book, goodbye);
- "month" / "meridiem" for the second half of a date or time split across two turns
  ("On the 16th..." / "...of December"), read against what the first half gave;
- "vague_time" for a time of day that names no hour ("after lunch").
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

NOW = datetime(2026, 11, 18, 10, 0, tzinfo=ZoneInfo("America/New_York"))  # a Wednesday

# (id, spoken text, asked, expect)
PHRASINGS: list[tuple[str, str, str, dict[str, object]]] = [
    # ---------------------------------------------------------------- dates, asked for a day
    ("d-come-in-16-dec", "Could I come in on the sixteenth of December?", "date", {"date": "2026-12-16"}),
    ("d-dec-sixteenth", "December sixteenth, please.", "date", {"date": "2026-12-16"}),
    ("d-the-sixteenth", "The sixteenth.", "date", {"date": "2026-12-16"}),
    ("d-16th-of-dec", "The sixteenth of December would be great.", "date", {"date": "2026-12-16"}),
    ("d-next-tuesday", "How about next Tuesday?", "date", {"date": "2026-11-24"}),
    ("d-tuesday", "Tuesday.", "date", {"date": "2026-11-24"}),
    ("d-this-friday", "This Friday would be good.", "date", {"date": "2026-11-20"}),
    ("d-tomorrow", "Tomorrow, please.", "date", {"date": "2026-11-19"}),
    ("d-day-after-tomorrow", "The day after tomorrow.", "date", {"date": "2026-11-20"}),
    ("d-monday-7th-dec", "Monday the seventh of December.", "date", {"date": "2026-12-07"}),
    ("d-week-from-friday", "A week from Friday.", "date", {"date": "2026-11-27"}),
    ("d-in-two-weeks", "In two weeks.", "date", {"date": "2026-12-02"}),
    ("d-first-of-dec", "The first of December.", "date", {"date": "2026-12-01"}),
    ("d-dec-the-first", "December the first.", "date", {"date": "2026-12-01"}),
    ("d-on-the-third", "On the third.", "date", {"date": "2026-12-03"}),
    ("d-thursday-3rd", "Thursday the third of December.", "date", {"date": "2026-12-03"}),
    ("d-next-wednesday", "Next Wednesday, if you have anything.", "date", {"date": "2026-11-25"}),
    ("d-friday-after-next", "Friday after next.", "date", {"date": "2026-11-27"}),
    ("d-twenty-third", "The twenty-third.", "date", {"date": "2026-11-23"}),
    ("d-nov-25", "November twenty-fifth.", "date", {"date": "2026-11-25"}),
    ("d-27th-nov", "The twenty-seventh of November.", "date", {"date": "2026-11-27"}),
    ("d-wed-second", "Wednesday the second.", "date", {"date": "2026-12-02"}),
    ("d-jan-fifth", "January fifth.", "date", {"date": "2027-01-05"}),
    ("d-in-three-days", "In three days.", "date", {"date": "2026-11-21"}),
    ("d-could-we-monday", "Could we do Monday?", "date", {"date": "2026-11-23"}),
    ("d-thursday-this-week", "Thursday this week, please.", "date", {"date": "2026-11-19"}),
    ("d-tuesday-8th", "Tuesday, December eighth.", "date", {"date": "2026-12-08"}),
    ("d-ninth-dec", "The ninth of December.", "date", {"date": "2026-12-09"}),
    ("d-dec-tenth", "December tenth works for me.", "date", {"date": "2026-12-10"}),
    ("d-friday-the-4th", "Friday the fourth.", "date", {"date": "2026-12-04"}),
    ("d-sometime-friday", "Sometime on Friday would be ideal.", "date", {"date": "2026-11-20"}),
    ("d-coming-monday", "This coming Monday.", "date", {"date": "2026-11-23"}),
    ("d-eleventh", "The eleventh.", "date", {"date": "2026-12-11"}),
    ("d-um-thursday", "Um, let me think. Thursday.", "date", {"date": "2026-11-19"}),
    ("d-twelfth-dec", "The twelfth of December.", "date", {"date": "2026-12-12"}),
    # ---------------------------------------------------------------- times, asked for a time
    ("t-230-afternoon", "Two thirty in the afternoon would be great.", "time", {"time": "14:30"}),
    ("t-two-thirty", "Two thirty.", "time", {"time": "14:30"}),
    ("t-half-past-two", "At half past two.", "time", {"time": "14:30"}),
    ("t-half-two", "Half two.", "time", {"time": "14:30"}),
    ("t-quarter-to-three", "A quarter to three.", "time", {"time": "14:45"}),
    ("t-quarter-past-ten-am", "Quarter past ten in the morning.", "time", {"time": "10:15"}),
    ("t-noon", "Noon.", "time", {"time": "12:00"}),
    ("t-at-noon", "At noon, please.", "time", {"time": "12:00"}),
    ("t-fourteen-thirty", "Fourteen thirty.", "time", {"time": "14:30"}),
    ("t-three-ish", "Three-ish.", "time", {"time": "15:00"}),
    ("t-around-three-oclock", "Around three o'clock.", "time", {"time": "15:00"}),
    ("t-ten-am", "Ten a.m.", "time", {"time": "10:00"}),
    ("t-eleven-morning", "Eleven in the morning.", "time", {"time": "11:00"}),
    ("t-nine-thirty-am", "Nine thirty a.m.", "time", {"time": "09:30"}),
    ("t-four-pm", "Four p.m., please.", "time", {"time": "16:00"}),
    ("t-ten-thirty", "Ten thirty.", "time", {"time": "10:30"}),
    ("t-three-fifteen", "Three fifteen.", "time", {"time": "15:15"}),
    ("t-five-past-eleven", "Five past eleven.", "time", {"time": "11:05"}),
    ("t-twenty-to-four", "Twenty to four.", "time", {"time": "15:40"}),
    ("t-one-oclock", "One o'clock.", "time", {"time": "13:00"}),
    ("t-at-one", "At one.", "time", {"time": "13:00"}),
    ("t-lets-say-two", "Let's say two.", "time", {"time": "14:00"}),
    ("t-eleven-forty-five", "Eleven forty-five.", "time", {"time": "11:45"}),
    ("t-four-forty-five-pm", "Four forty-five in the afternoon.", "time", {"time": "16:45"}),
    ("t-twelve-thirty", "Twelve thirty.", "time", {"time": "12:30"}),
    ("t-two", "Two.", "time", {"time": "14:00"}),
    ("t-half-nine-morning", "Half past nine in the morning.", "time", {"time": "09:30"}),
    ("t-quarter-to-five", "Quarter to five.", "time", {"time": "16:45"}),
    ("t-three-afternoon", "Three in the afternoon.", "time", {"time": "15:00"}),
    ("t-nine-oclock", "Nine o'clock.", "time", {"time": "09:00"}),
    ("t-three-of-the-clock", "At three of the clock.", "time", {"time": "15:00"}),
    ("t-ten-fifteen", "Ten fifteen would suit me.", "time", {"time": "10:15"}),
    ("t-eleven-thirty-am", "Eleven thirty a.m.", "time", {"time": "11:30"}),
    ("t-two-pm-please", "Two p.m. if possible.", "time", {"time": "14:00"}),
    ("t-fifteen-hundred", "Fifteen hundred hours.", "time", {"time": "15:00"}),
    ("t-one-thirty", "One thirty in the afternoon.", "time", {"time": "13:30"}),
    ("t-twenty-past-one", "Twenty past one.", "time", {"time": "13:20"}),
    ("t-how-about-four", "How about four?", "time", {"time": "16:00"}),
    ("t-ten-in-morning", "Ten in the morning is best.", "time", {"time": "10:00"}),
    ("t-after-lunch", "After lunch.", "time", {"vague_time": True}),
    ("t-sometime-afternoon", "Sometime in the afternoon.", "time", {"vague_time": True}),
    # ---------------------------------------------------------------- day and time together
    ("b-next-tue-3pm", "Next Tuesday at three p.m.", "date", {"date": "2026-11-24", "time": "15:00"}),
    ("b-tomorrow-ten-morning", "Tomorrow at ten in the morning.", "date", {"date": "2026-11-19", "time": "10:00"}),
    ("b-friday-half-two", "Friday at half past two.", "date", {"date": "2026-11-20", "time": "14:30"}),
    ("b-16th-dec-two-thirty", "The sixteenth of December at two thirty.", "date",
     {"date": "2026-12-16", "time": "14:30"}),
    ("b-monday-noon", "Monday at noon.", "date", {"date": "2026-11-23", "time": "12:00"}),
    ("b-thursday-afternoon-four", "Thursday afternoon at four.", "date", {"date": "2026-11-19", "time": "16:00"}),
    ("b-dec-third-eleven-am", "December third at eleven a.m.", "date", {"date": "2026-12-03", "time": "11:00"}),
    ("b-week-today-nine-thirty", "A week from today at nine thirty.", "date",
     {"date": "2026-11-25", "time": "09:30"}),
    ("b-friday-quarter-to-three", "Could I get Friday at a quarter to three?", "date",
     {"date": "2026-11-20", "time": "14:45"}),
    ("b-tue-8th-10am", "Tuesday the eighth at ten a.m.", "date", {"date": "2026-12-08", "time": "10:00"}),
    ("b-monday-morning-nine", "Monday morning at nine.", "date", {"date": "2026-11-23", "time": "09:00"}),
    ("b-tomorrow-two-thirty-pm", "Tomorrow at two thirty p.m.", "date", {"date": "2026-11-19", "time": "14:30"}),
    # ---------------------------------------------------------------- yes, asked to confirm
    ("y-yes", "Yes.", "confirm", {"intent": "affirm"}),
    ("y-all-correct", "Yes, that's all correct.", "confirm", {"intent": "affirm"}),
    ("y-yeah-right", "Yeah, that's right.", "confirm", {"intent": "affirm"}),
    ("y-sounds-good", "Sounds good.", "confirm", {"intent": "affirm"}),
    ("y-perfect-book-it", "Perfect, book it.", "confirm", {"intent": "affirm"}),
    ("y-yep", "Yep.", "confirm", {"intent": "affirm"}),
    ("y-works-for-me", "That works for me.", "confirm", {"intent": "affirm"}),
    ("y-sure-go-ahead", "Sure, go ahead.", "confirm", {"intent": "affirm"}),
    ("y-correct", "Correct.", "confirm", {"intent": "affirm"}),
    ("y-absolutely", "Absolutely.", "confirm", {"intent": "affirm"}),
    ("y-yes-please", "Yes, please.", "confirm", {"intent": "affirm"}),
    ("y-thats-fine", "That's fine, thank you.", "confirm", {"intent": "affirm"}),
    # ---------------------------------------------------------------- no, asked to confirm
    ("n-no", "No.", "confirm", {"intent": "deny"}),
    ("n-no-wrong", "No, that's wrong.", "confirm", {"intent": "deny"}),
    ("n-nope", "Nope.", "confirm", {"intent": "deny"}),
    ("n-not-right", "That's not right.", "confirm", {"intent": "deny"}),
    ("n-doesnt-work", "No, that doesn't work for me.", "confirm", {"intent": "deny"}),
    ("n-no-thanks", "No thanks.", "confirm", {"intent": "deny"}),
    # ---------------------------------------------------------------- corrections, at the read-back
    ("c-make-it-wednesday", "Actually, make it Wednesday.", "confirm", {"date": "2026-11-25"}),
    ("c-said-three-thirty", "No, I said three thirty.", "confirm", {"time": "15:30"}),
    ("c-four-instead", "Can we do four instead?", "confirm", {"time": "16:00"}),
    ("c-meant-thursday", "Sorry, I meant Thursday.", "confirm", {"date": "2026-11-19"}),
    ("c-time-to-ten-am", "Change the time to ten a.m.", "confirm", {"time": "10:00"}),
    ("c-no-seventeenth", "No, the seventeenth.", "confirm", {"date": "2026-12-17"}),
    ("c-earlier-eleven", "Could we make that eleven instead?", "confirm", {"time": "11:00"}),
    # ---------------------------------------------------------------- asking to hear it again
    ("r-repeat", "Sorry, could you repeat that?", "confirm", {"intent": "repeat"}),
    ("r-what-was-that", "What was that?", "time", {"intent": "repeat"}),
    ("r-pardon", "Pardon?", "date", {"intent": "repeat"}),
    ("r-say-again", "Say that again, please.", "confirm", {"intent": "repeat"}),
    ("r-didnt-catch", "I didn't catch that.", "time", {"intent": "repeat"}),
    # ---------------------------------------------------------------- wanting an appointment
    ("g-book", "I'd like to book an appointment.", "book", {"intent": "book"}),
    ("g-schedule-visit", "Hi, I need to schedule a visit.", "book", {"intent": "book"}),
    ("g-yes-please", "Yes please.", "book", {"intent": "affirm"}),
    ("g-goodbye", "No thank you, goodbye.", "book", {"intent": "goodbye"}),
    # ---------------------------------------------------------------- answers to another question
    ("o-all-correct-at-time", "Yes, that's all correct.", "time", {"intent": "affirm"}),
    ("o-yes-at-date", "Yes, that's right.", "date", {"intent": "affirm"}),
    # ---------------------------------------------------------------- halves of a split answer
    ("s-on-the-sixteenth", "On the sixteenth.", "date", {"date": "2026-12-16"}),
    ("s-of-december", "Of December.", "date", {"month": 12}),
    ("s-in-the-afternoon", "In the afternoon.", "time", {"meridiem": "pm"}),
    ("s-in-the-morning", "In the morning.", "time", {"meridiem": "am"}),
    ("s-pm", "P.M.", "time", {"meridiem": "pm"}),
]

# Written forms Deepgram produces with smart_format (dates, times, numerals) or numerals alone,
# after its documentation: "eight thirty seven pm on wednesday it's november second twenty twenty
# two" is written "8:37 PM on Wednesday, it's November 2 2022"; numerals write "nine hundred" as
# "900" and "nine hundredth" as "900th". (text, asked, expect), as above.
DEEPGRAM_FORMS: list[tuple[str, str, dict[str, object]]] = [
    ("2:30 PM would be great.", "time", {"time": "14:30"}),
    ("2:30PM", "time", {"time": "14:30"}),
    ("At 2:30 PM on Wednesday.", "date", {"date": "2026-11-25", "time": "14:30"}),
    ("3 PM.", "time", {"time": "15:00"}),
    ("10 AM, please.", "time", {"time": "10:00"}),
    ("10:15 AM", "time", {"time": "10:15"}),
    ("14:30", "time", {"time": "14:30"}),
    ("12 PM", "time", {"time": "12:00"}),
    ("Around 11:45 AM.", "time", {"time": "11:45"}),
    ("230 in the afternoon.", "time", {"time": "14:30"}),
    ("2 30", "time", {"time": "14:30"}),
    ("Quarter to 3.", "time", {"time": "14:45"}),
    ("Half past 2.", "time", {"time": "14:30"}),
    ("At 3 o'clock.", "time", {"time": "15:00"}),
    ("December 16th.", "date", {"date": "2026-12-16"}),
    ("December 16.", "date", {"date": "2026-12-16"}),
    ("December 16 2026.", "date", {"date": "2026-12-16"}),
    ("It's December 16, 2026.", "date", {"date": "2026-12-16"}),
    ("12/16", "date", {"date": "2026-12-16"}),
    ("12/16/2026", "date", {"date": "2026-12-16"}),
    ("The 16th.", "date", {"date": "2026-12-16"}),
    ("16th", "date", {"date": "2026-12-16"}),
    ("The 16th of December.", "date", {"date": "2026-12-16"}),
    ("Wednesday, December 16.", "date", {"date": "2026-12-16"}),
    ("November 25 at 10 AM.", "date", {"date": "2026-11-25", "time": "10:00"}),
    ("Tuesday, December 8th at 2:30 PM.", "date", {"date": "2026-12-08", "time": "14:30"}),
    ("12/8 at 9:30 AM", "date", {"date": "2026-12-08", "time": "09:30"}),
    ("Next Tuesday at 3 PM.", "date", {"date": "2026-11-24", "time": "15:00"}),
    ("In 2 weeks.", "date", {"date": "2026-12-02"}),
    ("16", "date", {"date": "2026-12-16"}),
    ("230", "time", {"time": "14:30"}),
    ("1030", "time", {"time": "10:30"}),
    ("Yes. That's correct.", "confirm", {"intent": "affirm"}),
]

# Said by a real voice: Allison Smith's recorded prompt words (Debian asterisk-core-sounds-en-wav,
# via loadgen.recordings), one recording per word joined as a caller would run them together. Only
# the words recorded there: weekdays, one to twelve, "at", "a.m.", "p.m.", "o'clock", today, tomorrow.
RECORDED_PHRASINGS: list[tuple[str, str, str, dict[str, object]]] = [
    ("h-friday-at-three-pm", "Friday at three p.m.", "date", {"date": "2026-11-20", "time": "15:00"}),
    ("h-tomorrow-at-ten-am", "tomorrow at ten a.m.", "date", {"date": "2026-11-19", "time": "10:00"}),
    ("h-monday-at-eleven-oclock", "Monday at eleven o'clock", "date", {"date": "2026-11-23", "time": "11:00"}),
    ("h-wednesday-at-one-pm", "Wednesday at one p.m.", "date", {"date": "2026-11-25", "time": "13:00"}),
    ("h-today-at-four-pm", "today at four p.m.", "date", {"date": "2026-11-18", "time": "16:00"}),
    ("h-saturday-at-eight-am", "Saturday at eight a.m.", "date", {"date": "2026-11-21", "time": "08:00"}),
    ("h-tomorrow-at-seven-pm", "tomorrow at seven p.m.", "date", {"date": "2026-11-19", "time": "19:00"}),
    ("h-thursday-at-nine", "Thursday at nine", "date", {"date": "2026-11-19", "time": "09:00"}),
    ("h-tuesday", "Tuesday", "date", {"date": "2026-11-24"}),
    ("h-thursday", "Thursday", "date", {"date": "2026-11-19"}),
    ("h-friday", "Friday", "date", {"date": "2026-11-20"}),
    ("h-tomorrow", "tomorrow", "date", {"date": "2026-11-19"}),
    ("h-two-pm", "two p.m.", "time", {"time": "14:00"}),
    ("h-at-four", "at four", "time", {"time": "16:00"}),
    ("h-nine-am", "nine a.m.", "time", {"time": "09:00"}),
    ("h-eleven-am", "eleven a.m.", "time", {"time": "11:00"}),
    ("h-six-pm", "six p.m.", "time", {"time": "18:00"}),
    ("h-twelve-oclock", "twelve o'clock", "time", {"time": "12:00"}),
    ("h-five-oclock", "five o'clock", "time", {"time": "17:00"}),
    ("h-at-three", "at three", "time", {"time": "15:00"}),
]
