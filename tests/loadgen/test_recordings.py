"""loadgen.recordings: the pinned real recordings, their fetch and cache, and the signal helpers.

The whole catalogue is fetched once per session into the shared cache (~/.cache/voicegate/recordings
or $VOICEGATE_RECORDINGS; the first time downloads ~80 MB of Debian packages, later runs only hash
the cached clips). Tests that break a cache on purpose work in their own temporary directory, with
the small packages, and really download them with apt.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audio import mulaw
from loadgen.recordings import (
    CLIPS,
    LEVELS,
    PACKAGES,
    Category,
    ChecksumError,
    active_level_dbfs,
    active_span,
    concat_with_pauses,
    delayed_echo,
    fetch,
    loop_to,
    mix_at_snr,
    overlay,
    peak_dbfs,
    rms_dbfs,
    scale_db,
)
from loadgen.recordings.catalogue import (ASTERISK_EN, ASTERISK_EN_TEXT, ASTERISK_PROMPT_LIST, FREEDESKTOP,
                                          SPHINX, SPHINX_TRANSCRIPTIONS, TWINKLE, FileSource, package)
from loadgen.recordings.convert import level_of
from loadgen.recordings.debian import AptDownloader, DownloadError, ensure_deb, sha256_file
from loadgen.recordings.licences import licences_markdown

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000

# Plausible durations (seconds) per category: a clip outside is a wrong file or a wrong cut.
DURATIONS = {
    Category.SPEECH: (0.8, 30.0),
    Category.WORD: (0.3, 1.5),
    Category.BACKCHANNEL: (0.2, 1.2),
    Category.INTERRUPTION_WORD: (0.15, 1.2),
    Category.NOISE_BED: (1.0, 15.0),
    Category.TRANSIENT: (0.2, 0.8),  # the brief of a transient: a short event
    Category.TONE: (0.15, 5.0),
    Category.MUSIC: (10.0, 60.0),
}
LEVEL_TOLERANCE_DB = 0.5  # mu-law's quantization moves a level by a few tenths at most
MAX_CLIPPED_FRACTION = 0.001  # a level rule that clipped more than 0.1 % of samples would be audible
WORD_PADDINGS_S = (0.3, 0.5)  # silence around a lone word for whisper
MIN_COUNTS = {Category.SPEECH: 25, Category.NOISE_BED: 10, Category.TRANSIENT: 8}


@pytest.fixture(scope="session")
def catalogue():
    """The whole catalogue, fetched once for the session into the shared cache."""
    return fetch()


@pytest.fixture(scope="session")
def speech(catalogue):
    return catalogue.pcm("allison_please_hold")


def _small_clips(*packages: str):
    return [c for c in CLIPS if set(c.packages) and set(c.packages) <= set(packages)]


# --- the catalogue itself ----------------------------------------------------------------------------

def test_catalogue_is_pinned_and_well_formed():
    names = [c.name for c in CLIPS]
    assert len(names) == len(set(names)), "clip names must be unique"
    for pkg in PACKAGES:
        assert re.fullmatch(r"[0-9a-f]{64}", pkg.sha256), pkg.name
        assert pkg.version and pkg.licence
    for clip in CLIPS:
        for name in clip.packages:
            package(name)  # every package a clip uses is pinned
        speechlike = clip.category in (Category.SPEECH, Category.WORD, Category.BACKCHANNEL,
                                       Category.INTERRUPTION_WORD)
        assert (clip.transcript is not None) == speechlike, clip.name
        if clip.transcript is not None:
            assert clip.transcript.strip(), clip.name
    for category, least in MIN_COUNTS.items():
        real = [c for c in CLIPS if c.category == category and not c.synthesized]
        assert len(real) >= least, f"{category}: {len(real)} real clips"


def test_every_clip_loads_with_plausible_duration_and_level(catalogue):
    assert len(catalogue) == len(CLIPS)
    for info in catalogue.clips():
        audio = catalogue.audio(info.name)
        low, high = DURATIONS[info.category]
        assert low <= len(audio) / RATE <= high, f"{info.name}: {len(audio) / RATE:.2f} s"
        assert info.duration_s == pytest.approx(len(audio) / RATE)
        rule = LEVELS[info.category]
        assert level_of(audio, rule.measure) == pytest.approx(rule.dbfs, abs=LEVEL_TOLERANCE_DB), info.name
        pcm = mulaw.decode(audio)
        clipped = np.count_nonzero(np.abs(pcm.astype(np.int32)) >= 32124) / pcm.size  # mu-law's largest code
        assert clipped <= MAX_CLIPPED_FRACTION, f"{info.name}: {clipped:.2%} clipped"
        assert info.licence and info.path.is_file()
        if info.category is Category.TRANSIENT:
            start, end = active_span(audio)
            assert end - start >= 0.02, f"{info.name} has no event in it"


def test_speech_clips_have_transcripts(catalogue):
    for info in catalogue.clips(Category.SPEECH):
        assert catalogue.transcript(info.name) == info.transcript
    with pytest.raises(KeyError):
        catalogue.transcript("babble_6")
    with pytest.raises(KeyError):
        catalogue.audio("no_such_clip")


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def test_transcripts_are_the_packages_own(catalogue):
    """Each transcript of a whole asterisk prompt or pocketsphinx recording is the one its package ships."""
    prompts = {}
    for line in catalogue.document(ASTERISK_EN_TEXT, ASTERISK_PROMPT_LIST).read_text().splitlines():
        key, sep, text = line.partition(": ")
        if sep:
            prompts[key] = text
    sphinx = {}
    for doc in SPHINX_TRANSCRIPTIONS:
        for line in catalogue.document(SPHINX, doc).read_text().splitlines():
            m = re.fullmatch(r"<s> (.*?) </s> \((\S+)\)", line.strip())
            if m:
                sphinx[m.group(2)] = m.group(1).strip()
    checked = 0
    for clip in CLIPS:
        src = clip.source
        if clip.transcript is None or not isinstance(src, FileSource) or src.start is not None:
            continue
        stem = Path(src.path).stem
        if src.package == ASTERISK_EN:
            prompt = src.path.split("en_US_f_Allison/")[1].removesuffix(".wav")
            assert prompts[prompt] == clip.transcript, clip.name
            checked += 1
        elif src.package == SPHINX and stem in sphinx:
            assert sphinx[stem] == clip.transcript, clip.name
            checked += 1
    assert checked >= 45  # the prompts, the words, the LibriVox and cards recordings


def test_cut_and_synthesized_words_say_their_transcript(catalogue, whisper):
    """The words cut out of longer recordings, and the synthesized ones, are heard as their words.

    whisper tiny.en is unsteady on a lone word a third of a second long (the same clip is "No." with
    0.3 s of silence around it and nothing with 0.25 s), so each clip gets two paddings and one must
    be heard right. "mm hmm" is left out: whisper tiny.en writes a hum as "MMM" or nothing.
    """
    checked = []
    for clip in CLIPS:
        cut = isinstance(clip.source, FileSource) and clip.source.start is not None
        if clip.transcript is None or not (cut or clip.synthesized) or clip.name == "mm_hmm_piper":
            continue
        heard = []
        for pad_s in WORD_PADDINGS_S:
            pad = mulaw.silence(int(pad_s * RATE))
            heard.append(whisper.transcribe_mulaw(pad + catalogue.audio(clip.name) + pad))
            if _words(heard[-1].replace("-", " ")) == _words(clip.transcript):
                break
        else:
            pytest.fail(f"{clip.name} ({clip.transcript!r}) was heard as {heard}")
        checked.append(clip.name)
    assert len(checked) >= 10


def test_licences_and_documents_are_kept_beside_the_clips(catalogue):
    for pkg in PACKAGES:
        text = catalogue.licence_file(pkg.name).read_text(errors="replace")
        assert len(text) > 200, pkg.name
    assert "CC-BY-SA-3.0" in catalogue.licence_file(ASTERISK_EN).read_text()


def test_recordings_md_is_up_to_date():
    assert (ROOT / "loadgen" / "RECORDINGS.md").read_text() == licences_markdown(), (
        "regenerate it: python -m loadgen.recordings --licences > loadgen/RECORDINGS.md"
    )


# --- fetch: hashes, corruption, idempotence, concurrency ---------------------------------------------

def test_cached_debs_match_their_pins(catalogue):
    debs = list((catalogue.root / "debs").glob("*.deb"))
    by_name = {p.name.split("_")[0]: p for p in debs}
    for pkg in PACKAGES:
        assert sha256_file(by_name[pkg.name]) == pkg.sha256


def test_a_warm_fetch_rewrites_nothing(catalogue):
    before = {p.name: p.stat().st_mtime_ns for p in (catalogue.root / "clips").iterdir()}
    manifest = (catalogue.root / "manifest.json").stat().st_mtime_ns
    again = fetch(catalogue.root)
    assert {p.name: p.stat().st_mtime_ns for p in (catalogue.root / "clips").iterdir()} == before
    assert (catalogue.root / "manifest.json").stat().st_mtime_ns == manifest
    assert again.audio("wind") == catalogue.audio("wind")


def _copy_deb(catalogue, name: str, dest: Path) -> Path:
    src = next((catalogue.root / "debs").glob(f"{name}_*.deb"))
    (dest / "debs").mkdir(parents=True, exist_ok=True)
    out = dest / "debs" / src.name
    out.write_bytes(src.read_bytes())
    return out


def test_corrupted_cached_deb_is_detected_and_fetched_again(catalogue, tmp_path):
    deb = _copy_deb(catalogue, TWINKLE, tmp_path)
    data = bytearray(deb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    deb.write_bytes(bytes(data))
    clips = _small_clips(TWINKLE)
    got = fetch(tmp_path, clips=clips, packages=[package(TWINKLE)])
    assert sha256_file(deb) == package(TWINKLE).sha256  # apt downloaded the real one again
    for clip in clips:
        assert got.audio(clip.name) == catalogue.audio(clip.name)


def test_a_deb_that_is_not_the_pinned_one_is_refused(tmp_path):
    wrong = dataclasses.replace(package(TWINKLE), sha256="0" * 64)
    with pytest.raises(ChecksumError, match="Refusing"):
        fetch(tmp_path, clips=_small_clips(TWINKLE), packages=[wrong])
    assert not list((tmp_path / "debs").glob("*.deb"))
    assert not (tmp_path / "clips").exists()
    assert not (tmp_path / "licences").exists()


def test_a_version_the_mirror_does_not_have_is_a_clear_error(tmp_path):
    gone = dataclasses.replace(package(TWINKLE), version="1:0.0.1-1")
    with pytest.raises(DownloadError, match=r"twinkle-common=1:0\.0\.1-1.*apt-cache policy twinkle-common"):
        ensure_deb(gone, tmp_path, AptDownloader(update_lists=False))
    assert not list(tmp_path.glob("*.deb"))


def test_a_corrupted_clip_is_rebuilt(catalogue, tmp_path):
    _copy_deb(catalogue, TWINKLE, tmp_path)
    clips = _small_clips(TWINKLE)
    first = fetch(tmp_path, clips=clips, packages=[package(TWINKLE)])
    path = first.clip_path("ringtone_twinkle")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    second = fetch(tmp_path, clips=clips, packages=[package(TWINKLE)])
    assert second.audio("ringtone_twinkle") == good


def test_two_processes_fetching_at_once_agree(catalogue, tmp_path):
    for name in (TWINKLE, FREEDESKTOP):
        _copy_deb(catalogue, name, tmp_path)
    script = (
        "import sys, json\n"
        "from loadgen.recordings import fetch\n"
        "from loadgen.recordings.catalogue import CLIPS, package\n"
        "names = ('twinkle-common', 'sound-theme-freedesktop')\n"
        "clips = [c for c in CLIPS if c.packages and set(c.packages) <= set(names)]\n"
        "cat = fetch(sys.argv[1], clips=clips, packages=[package(n) for n in names])\n"
        "print(json.dumps({c.name: cat.audio(c.name).hex()[:64] for c in clips}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-W", "error", "-c", script, str(tmp_path)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[0][0] == outs[1][0]
    for clip in _small_clips(TWINKLE, FREEDESKTOP):
        assert (tmp_path / "clips" / f"{clip.name}.ul").read_bytes() == catalogue.audio(clip.name)


def test_cli_lists_the_catalogue(catalogue):
    env = {**os.environ, "VOICEGATE_RECORDINGS": str(catalogue.root), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-W", "error", "-m", "loadgen.recordings", "--list"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"allison_please_hold\s+2\.42 s\s+asterisk-core-sounds-en-wav", done.stdout)
    assert f"{len(CLIPS)} clips in {catalogue.root}" in done.stdout


# --- the signal helpers, on real recordings ----------------------------------------------------------

def _measured_snr(speech_pcm, mixed_pcm) -> float:
    noise = mixed_pcm.astype(np.int32) - speech_pcm.astype(np.int32)
    noise_db = 10 * np.log10(np.mean(noise.astype(np.float64) ** 2) / 32768.0**2)
    return active_level_dbfs(speech_pcm) - noise_db


@pytest.mark.parametrize("bed", ["babble_6", "traffic_bus", "machine_3d_printer"])
@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0])
def test_mix_at_snr_gives_the_snr_asked_for(catalogue, speech, bed, snr):
    mixed = mix_at_snr(speech, catalogue.pcm(bed), snr)
    assert mixed.dtype == np.int16 and mixed.size == speech.size
    assert _measured_snr(speech, mixed) == pytest.approx(snr, abs=0.05)
    # In mu-law bytes too: the codec's own quantization noise stays far under a 20 dB bed.
    mixed_bytes = mix_at_snr(mulaw.encode(speech), catalogue.audio(bed), snr)
    assert isinstance(mixed_bytes, bytes) and len(mixed_bytes) == speech.size
    assert _measured_snr(mulaw.decode(mulaw.encode(speech)), mulaw.decode(mixed_bytes)) == pytest.approx(snr, abs=0.5)


def test_mix_at_snr_measures_the_speech_not_its_pauses(catalogue, speech):
    padded = concat_with_pauses([speech], lead_ms=2000, tail_ms=3000)
    bed = catalogue.pcm("babble_3")
    noise_alone = mix_at_snr(speech, bed, 10.0).astype(np.int32) - speech
    noise_padded = mix_at_snr(padded, bed, 10.0).astype(np.int32) - padded
    assert rms_dbfs(noise_padded.astype(np.int16)) == pytest.approx(rms_dbfs(noise_alone.astype(np.int16)), abs=0.2)


def test_loop_to_has_the_length_asked_and_no_seam(catalogue):
    wind = catalogue.pcm("wind")
    looped = loop_to(wind, 10.0)
    assert looped.size == 10 * RATE
    frame = RATE // 50
    levels = [rms_dbfs(looped[i:i + frame]) for i in range(0, looped.size - frame, frame)]
    source = [rms_dbfs(wind[i:i + frame]) for i in range(0, wind.size - frame, frame)]
    assert max(levels) <= max(source) + 1.0 and min(levels) >= min(source) - 3.0
    shifted = loop_to(wind, 10.0, offset_s=0.5)
    assert np.array_equal(shifted[: 9 * RATE], loop_to(wind, 10.5)[RATE // 2: RATE // 2 + 9 * RATE])
    assert len(loop_to(mulaw.encode(wind), 1.0)) == RATE


@pytest.mark.parametrize("delay_ms,gain_db", [(120.0, -12.0), (250.0, -20.0), (35.0, -6.0)])
def test_delayed_echo_has_the_delay_and_gain_asked_for(speech, delay_ms, gain_db):
    echo = delayed_echo(speech, delay_ms, gain_db)
    assert echo.size == speech.size + int(delay_ms * RATE / 1000)
    x, y = speech.astype(np.float64), echo.astype(np.float64)
    corr = np.correlate(y, x, mode="full")[x.size - 1:]
    lag = int(np.argmax(corr))
    assert lag == int(delay_ms * RATE / 1000)
    gain = corr[lag] / np.dot(x, x)
    assert 20 * np.log10(gain) == pytest.approx(gain_db, abs=0.1)


def test_delayed_echo_through_a_handset_keeps_the_delay(speech):
    echo = mulaw.decode(delayed_echo(mulaw.encode(speech), 180.0, -15.0, handset=True))
    x, y = speech.astype(np.float64), echo.astype(np.float64)
    corr = np.correlate(y, x, mode="full")[x.size - 1:]
    lag = int(np.argmax(corr))
    assert lag == 180 * RATE // 1000
    assert 20 * np.log10(corr[lag] / np.dot(x, x)) == pytest.approx(-15.0, abs=1.0)
    # The low-pass takes the top of the band: less energy above 3.4 kHz than in the plain echo.
    plain = delayed_echo(speech, 180.0, -15.0).astype(np.float64)
    spectrum = lambda s: np.abs(np.fft.rfft(s)) ** 2  # noqa: E731
    top = slice(int(3400 / 4000 * (y.size // 2)), None)
    assert spectrum(y)[top].sum() < 0.5 * spectrum(plain)[top].sum()


def test_concat_with_pauses_puts_silence_between_parts(catalogue):
    yes, no = catalogue.audio("word_tuesday"), catalogue.audio("word_three")
    joined = concat_with_pauses([yes, no], pause_ms=250)
    assert joined == yes + mulaw.silence(2000) + no
    per_join = concat_with_pauses([yes, no, yes], pause_ms=[100, 400], lead_ms=50)
    assert len(per_join) == 400 + 2 * len(yes) + len(no) + 800 + 3200
    with pytest.raises(ValueError):
        concat_with_pauses([yes, no], pause_ms=[100, 200])


def test_overlay_and_scale(speech, catalogue):
    door = catalogue.pcm("door")
    out = overlay(speech, door, at_s=1.0)
    assert out.size == speech.size
    assert np.array_equal(out[:RATE], speech[:RATE])
    longer = overlay(door, speech, at_s=0.5)
    assert longer.size == RATE // 2 + speech.size
    assert rms_dbfs(scale_db(speech, 6.0)) - rms_dbfs(speech) == pytest.approx(6.0, abs=0.05)
    loud = scale_db(speech, 40.0)
    loud_part = np.abs(speech) > 2000
    assert peak_dbfs(loud) <= 0.0
    assert np.array_equal(np.sign(loud[loud_part]), np.sign(speech[loud_part]))  # clipped, never wrapped
    with pytest.raises(TypeError):
        scale_db(speech.astype(np.float32), 1.0)


def test_active_level_and_span_ignore_pauses(speech):
    padded = concat_with_pauses([speech], lead_ms=1500, tail_ms=1000)
    assert active_level_dbfs(padded) == pytest.approx(active_level_dbfs(speech), abs=0.1)
    assert rms_dbfs(padded) < active_level_dbfs(padded) - 3.0
    start, end = active_span(padded)
    s0, e0 = active_span(speech)
    assert start == pytest.approx(1.5 + s0, abs=0.02) and end == pytest.approx(1.5 + e0, abs=0.02)
