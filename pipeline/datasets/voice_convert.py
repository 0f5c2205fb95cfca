"""New speakers from hibari's one bundled voice by source-filter conversion inside its vocoder.

hibari's network does not output audio: per 12.5-ms frame it predicts a harmonic magnitude
spectrum ``lh``, its phase offset ``th``, a noise spectrum ``ln``, a free-phase residual
``lr``/``phi`` (each ``(601 bins, frames)``, 0-12 kHz) and the pitch ``f0`` ``(frames,)``; its
numpy vocoder (``hibari.dsp.synth``) turns them into a waveform. So the two things that make a
voice sound like another person can be changed separately, before the vocoder runs:

* the source: ``f0 * f0_factor`` (the bundled voice, "heart", is female near 220 Hz; 0.5-0.65
  gives the 110-145 Hz of a typical male voice);
* the filter: every spectrum warped along frequency, ``S'(f) = S(f / formant)``, so the formants
  (set by vocal-tract length) move by ``formant`` (male tracts are ~15% longer: 0.82-0.9).

Resampling the finished waveform (the other neural speakers' ``pitch``) moves both together and
changes the speed; converting inside the vocoder keeps the timing and the neural voice's
articulation and gives male voices that the pool otherwise has only from piper's one.
"""
from __future__ import annotations

import numpy as np


def warp_bins(spec: np.ndarray, formant: float) -> np.ndarray:
    """``(bins, frames)`` -> the same shape with ``out[k] = spec[k / formant]`` (linear
    interpolation, the top bin repeated past the end)."""
    nb = spec.shape[0]
    src = np.clip(np.arange(nb, dtype=np.float64) / formant, 0, nb - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, nb - 1)
    w = (src - i0).astype(np.float32)[:, None]
    return (spec[i0] * (1 - w) + spec[i1] * w).astype(np.float32)


def convert(params: tuple[np.ndarray, ...], f0_factor: float, formant: float) -> tuple[np.ndarray, ...]:
    """hibari's vocoder inputs ``(lh, th, ln, lr, phi, f0)`` -> the converted ones."""
    if not (0.3 <= f0_factor <= 3.0 and 0.5 <= formant <= 2.0):
        raise ValueError(f"voice conversion factors out of range: f0 {f0_factor}, formant {formant}")
    *specs, f0 = params
    if formant != 1.0:
        specs = [warp_bins(s, formant) for s in specs]
    return (*specs, (f0 * f0_factor).astype(np.float32))


def hibari_converted(tts, text: str, speed: float, seed: int, f0_factor: float, formant: float) -> np.ndarray:
    """What ``tts(text, speed=speed, seed=seed)`` returns (a ``hibari.Hibari``; float32 at its
    24 kHz), spoken by the converted voice. With both factors 1 it is exactly that."""
    from hibari import dsp
    rng = np.random.default_rng(seed)
    parts = []
    for ps in tts.phonemize(text):
        ids = tts.ids(ps)
        if len(ids) < 3:
            continue
        out = tts.sess.run(None, {"ids": np.asarray([ids], np.int64), "speed": np.asarray([speed], np.float32)})
        parts.append(dsp.synth(*convert(tuple(o[0] for o in out), f0_factor, formant), rng))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
