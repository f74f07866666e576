"""The web page in a real browser: Debian's headless Chromium driven by chromedriver (selenium).

The fake microphone plays a test wav (``--use-file-for-fake-audio-capture``); the page captures it with
an AudioWorklet, resamples to 16 kHz and streams it to the server. The file-upload path decodes the
same wav with WebAudio. Both must show the transcript the Recognizer itself gives for that wav.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import editdistance
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


def cer(hyp: str, ref: str) -> float:
    h, r = hyp.replace(" ", ""), ref.replace(" ", "")
    return editdistance.eval(h, r) / max(len(r), 1)


def test_page_transcribes_microphone_and_file(tiny_model_dir, synth_corpus):
    import soundfile as sf
    from selenium.webdriver.common.by import By
    from test_serve import direct_finals

    from qifusion.serve.server import ServerConfig, ServerThread, load_recognizer

    cfg = ServerConfig(model_dir=tiny_model_dir, port=0, chunk_size=8)
    rec = load_recognizer(cfg)
    utt, wav = (synth_corpus / "train" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == 16000
    expected = " ".join(t for t in direct_finals(rec, audio, continuous=True) if t)
    assert expected, f"the tiny model decodes nothing for {utt}"
    duration = len(audio) / sr

    with ServerThread(cfg, recognizer=rec) as srv, chromium(Path(wav)) as driver:
        driver.get(srv.http_url)
        # file upload: WebAudio decode at 16 kHz, no resampling for a 16 kHz wav -> exactly the same text
        driver.find_element(By.ID, "file").send_keys(str(wav))
        driver.find_element(By.ID, "file-send").click()
        assert wait_state(driver, {"done"}) == "done", page_text(driver, "status")
        assert page_text(driver, "final") == expected
        assert page_text(driver, "accent") in rec.accents
        assert "% confidence" in page_text(driver, "accent-prob")

        # microphone: Chromium's fake device plays the wav in real time at its own rate (44.1/48 kHz);
        # the worklet resamples to 16 kHz, so allow small differences from resampling
        driver.find_element(By.ID, "mic-start").click()
        assert wait_state(driver, {"recording"}, timeout=30) == "recording", page_text(driver, "status")
        deadline = time.monotonic() + duration + 1.5
        partials = set()
        while time.monotonic() < deadline:
            partials.add(page_text(driver, "partial"))
            time.sleep(0.05)
        driver.find_element(By.ID, "mic-stop").click()
        assert wait_state(driver, {"done"}) == "done", page_text(driver, "status")
        mic_text = page_text(driver, "final")
        assert cer(mic_text, expected) <= 0.15, (mic_text, expected)
        assert any(p for p in partials), "no live partial result was shown"
        assert page_text(driver, "accent") in rec.accents
        assert np.isfinite(float(page_text(driver, "accent-prob").strip("(").split("%")[0]))
