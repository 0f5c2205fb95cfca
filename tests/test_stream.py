"""Streaming equals offline; detector logic; ring buffer; `kws stream --wav` and `kws stream-eval`."""
import json

import numpy as np
import pytest

from conftest import kws
from pipeline.audio import noise_floor, read_audio, write_wav
from pipeline.config import SMOOTH_WINDOWS
from pipeline.runtime import OnnxModel
from pipeline.stream import Detector, RingBuffer, StreamingScorer, with_quiet_margins


@pytest.fixture(scope="module")
def long_wav(tiny_data, real_clips, tmp_path_factory):
    """~5 s: three words with noise between them, written as a 44.1 kHz stereo file."""
    rng = np.random.default_rng(1)
    parts = [0.003 * rng.standard_normal(8000).astype(np.float32)]
    for p in real_clips[:3]:
        parts += [read_audio(p, 16000), 0.003 * rng.standard_normal(8000).astype(np.float32)]
    x = np.concatenate(parts)
    path = tmp_path_factory.mktemp("wav") / "three_words.wav"
    write_wav(path, x, 16000)
    return path, x


@pytest.mark.parametrize("chunk", [160, 1600, 4321])
def test_streaming_equals_offline(tiny_model, long_wav, chunk):
    _, x = long_wav
    scorer = StreamingScorer(tiny_model, hop_ms=100)
    offline = OnnxModel(tiny_model)
    results = []
    for i in range(0, len(x), chunk):
        results += scorer.push(x[i:i + chunk])
    n_expected = (len(x) - 16000) // 1600 + 1
    assert abs(len(results) - n_expected) <= 1
    starts = [scorer.window_start_sample(t) for t, _ in results]
    assert 0 <= starts[0] < 1600 and all(b - a == 1600 for a, b in zip(starts, starts[1:]))
    windows = np.stack([x[s:s + 16000] for s in starts])
    ref = offline.scores(windows)
    got = np.stack([p for _, p in results])
    assert np.abs(got - ref).max() < 1e-5


def test_detector_smoothing_threshold_refractory():
    labels = ["yes", "no", "_unknown_", "_silence_"]
    det = Detector(labels, {"yes": 0.6}, default=0.9, smooth=2, refractory_s=1.0)
    on = np.array([0.95, 0.02, 0.02, 0.01])
    unk = np.array([0.0, 0.0, 1.0, 0.0])
    assert det.update(0.1, unk) is None                        # _unknown_ never fires
    assert det.update(0.2, on) is None                         # smoothed 0.475 < 0.6
    d = det.update(0.3, on)
    assert d and d.label == "yes" and d.time == 0.3
    assert all(det.update(0.3 + k * 0.1, on) is None for k in range(1, 9))   # refractory
    assert det.update(1.4, on).label == "yes"
    det2 = Detector(labels, {}, default=0.9, smooth=1)
    assert det2.update(0.1, np.array([0.1, 0.85, 0.05, 0.0])) is None          # "no" below 0.9


def test_ring_buffer_order_and_overflow():
    rb = RingBuffer(10)
    rb.write(np.arange(6))
    rb.write(np.arange(6, 12))
    assert rb.dropped == 2
    np.testing.assert_array_equal(rb.read(), np.arange(2, 12))
    assert len(rb.read(timeout=0.01)) == 0


def test_stream_wav_cli_reports_words(tiny_model, long_wav, tmp_path):
    path, _ = long_wav
    import soundfile as sf
    import soxr
    x = read_audio(path, 16000)
    stereo44 = np.stack([soxr.resample(x, 16000, 44100)] * 2, axis=1)
    sf.write(tmp_path / "s44.wav", stereo44, 44100)
    p = kws("stream", "--model", tiny_model, "--wav", tmp_path / "s44.wav", "--json", "--threshold", "0.5")
    dets = [json.loads(line) for line in p.stdout.splitlines()]
    assert dets and all(set(d) == {"time", "label", "score"} for d in dets)
    assert "real-time factor" in p.stderr


def test_stream_wav_quiet_margins(tiny_model, real_clips):
    """A 1-s clip alone never fills a window (the first one ends 1.015 s in); with the default margins
    of quiet floor it streams as a word heard by a microphone would, with times in the file's clock."""
    clip = real_clips[0]
    x = read_audio(clip, 16000)
    assert len(x) == 16000
    alone = kws("stream", "--model", tiny_model, "--wav", clip, "--margin-ms", "0")
    assert "; 0 windows" in alone.stderr
    p = kws("stream", "--model", tiny_model, "--wav", clip, "--json", "--threshold", "0.05")
    margin = 1.0 + SMOOTH_WINDOWS * 0.1                   # 1 s window + the smoothed windows of 100 ms
    quiet = noise_floor(int(round(16000 * margin)))
    scorer = StreamingScorer(tiny_model, hop_ms=100)
    windows = scorer.push(np.concatenate([quiet, x, quiet]))
    assert f"; {len(windows)} windows" in p.stderr and len(windows) >= 26
    det = Detector(scorer.labels, {}, default=0.05)
    expected = [(d.time, d.label) for t, probs in windows if (d := det.update(t - margin, probs))]
    got = [(d["time"], d["label"]) for d in map(json.loads, p.stdout.splitlines())]
    assert len(got) == len(expected) >= 1
    assert all(abs(a[0] - b[0]) < 1e-6 and a[1] == b[1] for a, b in zip(got, expected))
    assert all(-margin < t < 1.0 + margin for t, _ in got)
    framed, offset = with_quiet_margins(x, scorer, margin_ms=1234)
    assert offset == pytest.approx(1.3) and len(framed) == 16000 + 2 * 20800      # whole hops


def test_stream_eval_reports_keys(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "se.json"
    kws("stream-eval", "--model", tiny_model, "--data", tiny_data, "--minutes", "1", "--json", out, "--out", tmp_path)
    r = json.loads(out.read_text())
    for k in ("hit_rate", "false_accepts_per_hour", "latency_ms_median", "real_time_factor"):
        assert k in r
    assert 0 <= r["hit_rate"] <= 1 and r["real_time_factor"] > 0 and r["keywords"] > 10
    assert r["real_time_factor"] / 20 < r["real_time_factor_median_hop"] <= 2 * r["real_time_factor"]   # same units
    assert (tmp_path / "det.png").stat().st_size > 1000
    assert sum(r["false_accepts_by_kind"].values()) == r["false_accepts"]
    src = r["false_accept_sources"]
    assert sum(s["count"] for s in src) <= r["false_accepts"] and (len(src) == 20 or sum(s["count"] for s in src) == r["false_accepts"])
    for s in src:                      # a clip of the data, placed at least as often as it fired
        assert s["clip"] == "(noise)" or ((tiny_data / s["clip"]).is_file() and 1 <= s["count"] <= s["placed"])
    z = np.load(tmp_path / "scores.npz")
    assert z["probs"].shape == (r["windows"], len(z["labels"]))
    assert r["split"] == "test"


def test_stream_eval_split(tiny_model, tiny_data, tmp_path):
    """--split val builds the stream from other speakers; a split without clips is a one-line error."""
    import shutil
    from pipeline.datasets.speech_commands import hash_split
    out = tmp_path / "val.json"
    kws("stream-eval", "--model", tiny_model, "--data", tiny_data, "--minutes", "0.5", "--split", "val",
        "--json", out, "--out", tmp_path)
    assert json.loads(out.read_text())["split"] == "val"
    one = tmp_path / "one"                       # one speaker, not hashed into val: no val clips
    solo = next(f"solo{i}" for i in range(100) if hash_split(f"solo{i}") != "val")
    for word in ("yes", "no"):
        (one / word).mkdir(parents=True)
        shutil.copy(next((tiny_data / word).glob("*.wav")), one / word / f"{solo}_nohash_0.wav")
    p = kws("stream-eval", "--model", tiny_model, "--data", one, "--split", "val", "--minutes", "0.5", check=False)
    assert p.returncode == 2 and "no clips in its val split" in p.stderr and "Traceback" not in p.stderr


def test_match_counts_hits_and_kinds_of_false_accepts():
    from pipeline.stream_eval import Event, match
    ev = [Event("yes", 1.0, 1.5, True, "yes/a.wav"), Event("_unknown_", 4.0, 4.5, False, "start/b.wav"),
          Event("no", 7.0, 7.4, True, "no/c.wav")]
    dets = [(1.6, "yes"), (2.4, "yes"), (4.6, "no"), (7.2, "up"), (7.5, "no"), (10.0, "go"), (4.9, "no")]
    hits, fa, lat, kinds, sources = match(dets, ev)
    assert hits == 2 and fa == 5
    assert kinds == {"wrong_word": 1, "repeat": 1, "non_keyword": 2, "noise": 1}
    assert np.allclose(sorted(lat), [0.1, 0.1])
    # each false accept is traced to the clip it fired on
    assert sources == {("yes", "yes/a.wav"): 1, ("no", "start/b.wav"): 2, ("up", "no/c.wav"): 1, ("go", ""): 1}


def test_stream_bad_inputs(tiny_model, tmp_path):
    p = kws("stream", "--model", tiny_model, "--wav", tmp_path / "missing.wav", check=False)
    assert p.returncode == 2 and "missing.wav" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "text.wav").write_text("hello")
    p = kws("stream", "--model", tiny_model, "--wav", tmp_path / "text.wav", check=False)
    assert p.returncode == 2 and "text.wav" in p.stderr and "Traceback" not in p.stderr
    p = kws("stream", "--model", tiny_model, "--wav", tmp_path / "x.wav", "--hop-ms", "105", check=False)
    assert p.returncode == 2 and "--hop-ms" in p.stderr
    p = kws("stream", "--model", tiny_model, "--wav", tmp_path / "x.wav", "--window-ms", "800", check=False)
    assert p.returncode == 2 and "--window-ms" in p.stderr and "1000 ms" in p.stderr and "Traceback" not in p.stderr
    p = kws("stream", "--model", tmp_path / "none.onnx", "--wav", tmp_path / "x.wav", check=False)
    assert p.returncode == 2 and "none.onnx" in p.stderr
    p = kws("stream", "--model", tiny_model, check=False)
    assert p.returncode == 2 and "--mic or --wav" in p.stderr
