"""The web page in a real browser: Debian's headless Chromium driven by chromedriver (selenium).

The fake microphone plays a test wav (``--use-file-for-fake-audio-capture``); the page captures it with
an AudioWorklet, resamples to 16 kHz and streams it to the server. The file-upload path decodes the
same wav with WebAudio. Both must show the transcript the Recognizer itself gives for the audio the
server received, and that audio must be the wav (file: to within one 16-bit step; microphone: its
loudness contour and speech span).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): `make setup`",
)


@contextlib.contextmanager
def chromium(wav: Path):
    """A headless Chromium whose fake microphone plays ``wav`` once (no downloads: driver path given)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="qifusion-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_state(driver, states: set[str], timeout: float = 60.0) -> str:
    """Wait until the page's status element reaches one of ``states``; returns the state."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        state = driver.find_element(By.ID, "status").get_attribute("data-state")
        if state in states or state == "error" or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def page_text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text.strip()


class RecordingRecognizer:
    """Delegates to a Recognizer and keeps the audio each stream receives (what the page sent)."""

    def __init__(self, rec) -> None:
        self.rec = rec
        self.received: list[list[np.ndarray]] = []

    def __getattr__(self, name):
        return getattr(self.rec, name)

    def create_stream(self):
        stream, pieces = self.rec.create_stream(), []
        self.received.append(pieces)
        accept = stream.accept_waveform

        def record(sample_rate, samples):
            pieces.append(np.array(samples, dtype=np.float32))
            accept(sample_rate, samples)

        stream.accept_waveform = record
        return stream


def envelope(x: np.ndarray, hop: int = 320) -> np.ndarray:
    """20 ms RMS envelope, shape (len(x) // hop,)."""
    n = len(x) // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def speech_span_s(x: np.ndarray) -> float:
    """Seconds from the first to the last 20 ms frame above 10% of the peak envelope."""
    e = envelope(x)
    loud = np.flatnonzero(e > 0.1 * e.max())
    return (loud[-1] - loud[0] + 1) * 0.02


def envelope_match(captured: np.ndarray, ref: np.ndarray) -> float:
    """Best correlation of the 20 ms envelopes over all alignments (1 = same loudness contour)."""
    e_c, e_r = envelope(captured), envelope(ref)
    with np.errstate(invalid="ignore", divide="ignore"):  # all-silent windows give NaN: ignored
        corr = [np.corrcoef(e_c[k: k + len(e_r)], e_r)[0, 1] for k in range(len(e_c) - len(e_r) + 1)]
    return float(np.nanmax(corr))


def test_page_transcribes_microphone_and_file(tiny_model_dir, synth_corpus, tmp_path):
    import soundfile as sf
    from selenium.webdriver.common.by import By
    from test_calibration import write_calibration
    from test_serve import direct_finals

    from qifusion.serve.server import ServerConfig, ServerThread, load_recognizer

    model = tmp_path / "tiny-calibrated"  # a copy with a (made-up) working accent-ID calibration
    shutil.copytree(tiny_model_dir, model)
    accents = (model / "accents.txt").read_text().split()
    write_calibration(model, temperature=2.0, accuracy=0.9, chance=1 / 3, accents=tuple(accents))
    cfg = ServerConfig(model_dir=model, port=0, chunk_size=8)
    rec = RecordingRecognizer(load_recognizer(cfg))
    utt, wav = (synth_corpus / "train" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == 16000
    expected = " ".join(t for t in direct_finals(rec.rec, audio, continuous=True) if t)
    assert expected, f"the tiny model decodes nothing for {utt}"

    with ServerThread(cfg, recognizer=rec) as srv, chromium(Path(wav)) as driver:
        driver.get(srv.http_url)
        # the page names the model it serves and its measured accent-ID accuracy (from /health)
        deadline = time.monotonic() + 10
        while page_text(driver, "model-name") == "(loading)" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert page_text(driver, "model-name") == "tiny-calibrated"
        assert "dev accuracy 90.0%" in page_text(driver, "aid-note")
        # file upload: WebAudio decodes at 16 kHz (no resampling for a 16 kHz wav) -> exactly the same text
        driver.find_element(By.ID, "file").send_keys(str(wav))
        driver.find_element(By.ID, "file-send").click()
        assert wait_state(driver, {"done"}) == "done", page_text(driver, "status")
        sent = np.concatenate(rec.received[-1])  # the samples, to within one 16-bit step of WebAudio decoding
        assert sent.shape == audio.shape and np.abs(sent - audio).max() <= 1 / 32768
        # the page shows exactly the Recognizer's transcript of what it received (the tiny test model is so
        # undertrained that a one-step difference in a sample can change a token, so not `expected` itself)
        file_expected = " ".join(t for t in direct_finals(rec.rec, sent, continuous=True) if t)
        assert page_text(driver, "final") == file_expected and file_expected
        assert page_text(driver, "accent") in rec.accents
        shown = page_text(driver, "accent-prob")
        assert "calibrated probability" in shown and "accent-ID accuracy on dev: 90.0%, chance 33.3%" in shown

        # microphone: Chromium's fake device plays the wav in real time at its own rate (44.1/48 kHz) and
        # the worklet resamples to 16 kHz; on a busy machine the fake capture has small glitches, so the
        # check is: the loudness contour and speech span of the wav arrived, and the page shows exactly
        # the transcript of the audio the server received
        driver.find_element(By.ID, "mic-start").click()
        assert wait_state(driver, {"recording"}, timeout=30) == "recording", page_text(driver, "status")
        deadline = time.monotonic() + len(audio) / sr + 1.5
        partials = set()
        while time.monotonic() < deadline:
            partials.add(page_text(driver, "partial"))
            time.sleep(0.05)
        driver.find_element(By.ID, "mic-stop").click()
        assert wait_state(driver, {"done"}) == "done", page_text(driver, "status")
        captured = np.concatenate(rec.received[-1])
        assert abs(speech_span_s(captured) - speech_span_s(audio)) <= 0.15 * speech_span_s(audio)
        assert envelope_match(captured, audio) >= 0.6
        mic_expected = " ".join(t for t in direct_finals(rec.rec, captured, continuous=True) if t)
        assert page_text(driver, "final") == mic_expected and mic_expected
        assert any(p for p in partials), "no live partial result was shown"
        assert page_text(driver, "accent") in rec.accents

    # the same model without calibration (training calibrates its model dir; this copy has the file
    # removed): the page names no accent and says why
    uncalibrated = tmp_path / "plain" / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, uncalibrated)
    (uncalibrated / "aid_calibration.json").unlink(missing_ok=True)
    plain = ServerConfig(model_dir=uncalibrated, port=0, chunk_size=8)
    with ServerThread(plain, recognizer=load_recognizer(plain)) as srv, chromium(Path(wav)) as driver:
        driver.get(srv.http_url)
        driver.find_element(By.ID, "file").send_keys(str(wav))
        driver.find_element(By.ID, "file-send").click()
        assert wait_state(driver, {"done"}) == "done", page_text(driver, "status")
        assert page_text(driver, "model-name") == tiny_model_dir.name
        assert page_text(driver, "aid-note").startswith("accent ID not calibrated")
        assert page_text(driver, "accent") == "not reported"
        assert page_text(driver, "accent-note").startswith("accent ID not calibrated")
