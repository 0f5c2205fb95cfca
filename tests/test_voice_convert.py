"""Voice conversion inside hibari's vocoder: factors 1 give hibari's own output bit for bit; the
pitch factor moves the measured pitch by that factor; the formant factor moves the spectral
envelope down without touching the pitch; converted speakers are named by their factors."""
import numpy as np
import pytest

from pipeline.datasets.synth import Speaker
from pipeline.datasets.voice_convert import convert, warp_bins


def test_warp_bins_maps_bin_k_to_k_over_formant():
    spec = np.arange(12, dtype=np.float32)[:, None].repeat(3, 1)
    assert np.array_equal(warp_bins(spec, 1.0), spec)
    half = warp_bins(spec, 2.0)                       # out[k] = spec[k / 2]
    assert np.allclose(half[:, 0], np.arange(12) / 2)
    low = warp_bins(spec, 0.5)                        # out[k] = spec[2k], the top bin past the end
    assert np.allclose(low[:, 0], np.minimum(np.arange(12) * 2, 11))


def test_convert_scales_f0_and_checks_its_factors():
    rng = np.random.default_rng(0)
    params = tuple(rng.standard_normal((601, 5)).astype(np.float32) for _ in range(5)) + \
        (np.array([0, 200, 210, 220, 0], np.float32),)
    out = convert(params, 0.5, 1.0)
    assert np.allclose(out[-1], [0, 100, 105, 110, 0])
    assert all(np.array_equal(a, b) for a, b in zip(out[:-1], params[:-1]))
    with pytest.raises(ValueError, match="out of range"):
        convert(params, 0.1, 1.0)


def test_speaker_id_names_the_conversion():
    assert Speaker("hibari", "heart", 1.0).id == "hibari-heart"
    assert Speaker("hibari", "heart", 1.0, 0.55, 0.88).id == "hibari-heart-f55-w88"


def _pitch(x, sr):
    """Median autocorrelation pitch over the loud 40-ms frames, Hz."""
    n = int(0.04 * sr)
    frames = [x[i:i + n] for i in range(0, len(x) - n, n // 2)]
    loud = max(float(np.sqrt(np.mean(f ** 2))) for f in frames) * 0.3
    out = []
    for f in frames:
        if np.sqrt(np.mean(f ** 2)) < loud:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1:]
        lo, hi = int(sr / 400), int(sr / 60)
        out.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(out))


def _centroid(x, sr, fmax=4000):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    keep = f < fmax
    return float((spec[keep] * f[keep]).sum() / spec[keep].sum())


def test_conversion_moves_pitch_and_formants_of_the_real_voice():
    hibari = pytest.importorskip("hibari")
    from pipeline.datasets.voice_convert import hibari_converted
    tts = hibari.Hibari()
    sr = hibari.SAMPLE_RATE
    plain = tts("nine", speed=1.0, seed=3)
    assert np.array_equal(hibari_converted(tts, "nine", 1.0, 3, 1.0, 1.0), plain)
    low = hibari_converted(tts, "nine", 1.0, 3, 0.6, 1.0)
    assert len(low) == len(plain)                                  # timing kept
    assert 0.5 < _pitch(low, sr) / _pitch(plain, sr) < 0.7
    warped = hibari_converted(tts, "nine", 1.0, 3, 1.0, 0.8)
    assert _centroid(warped, sr) / _centroid(plain, sr) < 0.9
    assert abs(_pitch(warped, sr) / _pitch(plain, sr) - 1) < 0.1


def test_kws_synth_hibari_vc_writes_the_converted_speakers(tmp_path):
    pytest.importorskip("hibari")
    import csv
    from pipeline.datasets.synth import SynthArgs, synthesise
    args = SynthArgs(words=("yes",), unknown_words=("cat",), takes=1, unknown_per_speaker=1,
                     engines=("hibari-vc",), max_speakers=2)
    synthesise(tmp_path / "vc", args, jobs=1, log=lambda *x: None)
    rows = list(csv.DictReader(open(tmp_path / "vc" / "manifest.csv")))
    speakers = {r["speaker"] for r in rows}
    assert len(speakers) == 2 and all(s.startswith("hibari-heart-f") and "-w" in s for s in speakers)
    assert len(rows) == 2 * (5 + 1)                   # neural voices: 5 takes per word, + 1 unknown
