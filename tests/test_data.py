"""Loader, splits, labels, audio reading and the int16 cache, on small layouts made here."""
import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import PAD_FLOOR_DBFS, AudioError, fit_to_window, load_clip, read_audio
from pipeline.config import FeatureConfig, TrainConfig
from pipeline.data import prepare
from pipeline.datasets.speech_commands import DatasetError, hash_split, resolve_labels, scan, speaker_of


def make_layout(root, words=("yes", "no", "bed"), speakers=12, lists=False, sr=16000):
    rng = np.random.default_rng(0)
    for w in words:
        (root / w).mkdir(parents=True, exist_ok=True)
        for s in range(speakers):
            sf.write(root / w / f"spk{s:02d}ab_nohash_0.wav", (0.1 * rng.standard_normal(sr)).astype(np.float32), sr)
    if lists:
        (root / "validation_list.txt").write_text(f"{words[0]}/spk00ab_nohash_0.wav\n")
        (root / "testing_list.txt").write_text(f"{words[1]}/spk01ab_nohash_0.wav\n{words[0]}/spk01ab_nohash_0.wav\n")
    return root


def test_lists_define_splits(tmp_path):
    clips = scan(make_layout(tmp_path, lists=True))
    split = {f"{c.word}/{c.path.name}": c.split for c in clips}
    assert split["yes/spk00ab_nohash_0.wav"] == "val"
    assert split["no/spk01ab_nohash_0.wav"] == "test"
    assert sum(s == "train" for s in split.values()) == len(split) - 3


def test_hash_split_is_speaker_disjoint(tmp_path):
    clips = scan(make_layout(tmp_path, speakers=40))
    by_speaker = {}
    for c in clips:
        by_speaker.setdefault(c.speaker, set()).add(c.split)
    assert all(len(s) == 1 for s in by_speaker.values())
    assert {c.split for c in clips} == {"train", "val", "test"}
    assert hash_split("abc_nohash_1") == hash_split("abc_nohash_7")


def test_speaker_of():
    from pathlib import Path
    assert speaker_of(Path("x/0a7c2a8d_nohash_3.wav")) == "0a7c2a8d"
    assert speaker_of(Path("x/jackson_12.wav")) == "jackson_12"


def test_labels_tasks(tmp_path):
    root = make_layout(tmp_path)
    clips = scan(root)
    assert resolve_labels([root], clips, "all", None) == ("bed", "no", "yes", "_unknown_", "_silence_")
    assert resolve_labels([root], clips, "auto", ["yes"]) == ("yes", "_unknown_", "_silence_")
    (root / "words.txt").write_text("no\nyes\n")
    assert resolve_labels([root], clips, "auto", None)[:2] == ("no", "yes")
    with pytest.raises(DatasetError, match="--words: no clips for up"):
        resolve_labels([root], clips, "auto", ["up"])


def test_read_audio_resamples_and_mixes(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t)], 1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 8000)
    x = read_audio(tmp_path / "s.wav", 16000)
    assert x.dtype == np.float32 and x.ndim == 1 and abs(len(x) - 16000) <= 1
    assert abs(np.abs(x[1000:15000]).max() - 0.5) < 0.02


def test_fit_to_window_pads_centred_and_crops_loudest():
    y = fit_to_window(np.ones(100, np.float32), 300)
    assert y.shape == (300,) and y[:100].sum() == 0 and y[100:200].sum() == 100
    x = np.zeros(1000, np.float32)
    x[700:800] = 1
    assert fit_to_window(x, 200).sum() == 100


def test_short_files_are_padded_with_a_quiet_deterministic_floor(tmp_path):
    sf.write(tmp_path / "short.wav", np.full(4000, 0.25, np.float32), 16000)
    y = load_clip(tmp_path / "short.wav", 16000, 16000)
    pad = np.concatenate([y[:6000], y[10000:]])
    assert np.all(y[6000:10000] == np.float32(0.25))                     # the recording, centred
    rms_db = 20 * np.log10(np.sqrt(np.mean(pad.astype(np.float64) ** 2)))
    assert abs(rms_db - PAD_FLOOR_DBFS) < 0.5 and np.all(pad != 0)       # a noise floor, not zeros
    assert np.array_equal(y, load_clip(tmp_path / "short.wav", 16000, 16000))
    z = load_clip(tmp_path / "short.wav", 16000, 16000, floor_dbfs=None)
    assert np.all(z[:6000] == 0) and np.all(z[10000:] == 0)


def test_bad_audio_raises_with_path(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match="bad.wav"):
        read_audio(tmp_path / "bad.wav", 16000)
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "missing.wav", 16000)


def test_prepare_caches_int16_memmap_and_reuses_it(tmp_path):
    root = make_layout(tmp_path / "d", speakers=30)
    feats, tc = FeatureConfig(), TrainConfig(silence_fraction=0.1)
    data = prepare([root], feats, tc, tmp_path / "cache", task="auto", words=["yes", "no"])
    tr = data.splits["train"]
    assert isinstance(tr.audio, np.memmap) and tr.audio.dtype == np.int16 and tr.audio.shape[1] == 16000
    assert data.labels == ("yes", "no", "_unknown_", "_silence_")
    assert (tr.labels == 3).sum() == round(0.1 * (len(tr) - (tr.labels == 3).sum()))   # silence clips added
    folders = sorted((tmp_path / "cache").iterdir())
    again = prepare([root], feats, tc, tmp_path / "cache", task="auto", words=["yes", "no"])
    assert sorted((tmp_path / "cache").iterdir()) == folders                  # nothing rebuilt
    np.testing.assert_array_equal(again.splits["train"].audio, tr.audio)
    sf.write(root / "yes" / "new_nohash_0.wav", np.zeros(16000, np.float32), 16000)
    prepare([root], feats, tc, tmp_path / "cache", task="auto", words=["yes", "no"])
    assert len(list((tmp_path / "cache").iterdir())) > len(folders)           # changed data, new cache


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        scan(tmp_path / "nope")
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no audio files"):
        scan(tmp_path / "empty")


def test_clip_repeats_follow_the_data_folders(tmp_path):
    from pipeline.data import clip_repeats
    a, b = tmp_path / "synth", tmp_path / "mine"
    files = [str(a / "yes" / "s1_nohash_0.wav"), str(b / "yes" / "me_nohash_0.wav"), "",
             str(tmp_path / "synth2" / "no" / "x.wav")]                 # a sibling whose name starts alike
    assert clip_repeats(files, [a, b], (1, 1)) is None
    assert clip_repeats(files, [a, b], ()) is None
    assert clip_repeats(files, [a, b], (1, 20)).tolist() == [1, 20, 1, 1]
    assert clip_repeats(files, [a, b], (3, 1)).tolist() == [3, 1, 1, 1]
    with pytest.raises(DatasetError, match="--repeat"):
        clip_repeats(files, [a, b], (1, 2, 3))
