"""Loader, splits, labels, audio reading and the int16 cache, on small layouts made here."""
import warnings
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.audio import PAD_FLOOR_DBFS, AudioError, fit_to_window, load_clip, read_audio
from pipeline.config import FeatureConfig, TrainConfig
from pipeline.data import prepare
from pipeline.datasets.sampler import EpochSampler, unknown_cap
from pipeline.datasets.speech_commands import DatasetError, hash_split, resolve_labels, scan, speaker_of
from pipeline.device_clips import upload


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
    n_words, n_unknown = int((tr.labels < 2).sum()), int((tr.labels == 2).sum())
    cap = unknown_cap(n_words, tc.unknown_fraction)
    assert n_unknown == cap and (tr.labels == 3).sum() == round(0.1 * (n_words + cap))   # capped, + silence
    drawn = prepare([root], feats, replace(tc, unknown_per_epoch=True), tmp_path / "c2", task="auto", words=["yes", "no"])
    d = drawn.splits["train"]
    train_clips = [c for c in scan(root) if c.split == "train"]
    assert (d.labels < 3).sum() == len(train_clips) and (d.labels == 2).sum() > cap   # every _unknown_ clip
    assert (d.labels == 3).sum() == (tr.labels == 3).sum()            # silence: a share of the capped split
    val = drawn.splits["val"]                                          # the other splits stay capped
    assert (val.labels == 2).sum() <= unknown_cap(int((val.labels < 2).sum()), tc.unknown_fraction)
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


def test_epoch_sampler_draws_the_unknown_share_afresh_each_epoch():
    """Every word/_silence_ clip each epoch (x its repeats), n_unknown distinct _unknown_ clips drawn
    per epoch, all of them over a few epochs; deterministic per (seed, epoch); ranks split an epoch."""
    labels = np.array([0] * 40 + [1] * 20 + [2] * 30)            # words, _silence_, _unknown_ (index 2)
    repeats = np.ones(90, np.int64)
    repeats[:10] = 3                                             # ten oversampled word clips
    s = EpochSampler(labels, unknown=2, n_unknown=8, repeats=repeats, batch_size=4, seed=5)
    assert s.resampled and s.uses_per_epoch == 3 * 10 + 30 + 20 + 8 and s.steps_per_epoch == 88 // 4
    seen = set()
    for e in range(12):
        full = EpochSampler(labels, 2, 8, repeats, batch_size=1, seed=5).epoch(e)   # the whole epoch
        counts = np.bincount(full.numpy(), minlength=90)
        assert np.all(counts[:60] == repeats[:60])               # every fixed clip, repeats honoured
        drawn = np.flatnonzero(counts[60:]) + 60
        assert len(drawn) == 8 and np.all(counts[drawn] == 1)
        seen |= set(drawn.tolist())
        assert np.array_equal(s.epoch(e), s.epoch(e))            # same epoch, same order (resume)
        assert len(s.epoch(e)) == s.steps_per_epoch * 4
    assert len(seen) == 30                                       # every _unknown_ clip used
    assert not np.array_equal(s.epoch(0), s.epoch(1))
    r0 = EpochSampler(labels, 2, 8, repeats, batch_size=2, seed=5, rank=0, world=2).epoch(3)
    r1 = EpochSampler(labels, 2, 8, repeats, batch_size=2, seed=5, rank=1, world=2).epoch(3)
    one = EpochSampler(labels, 2, 8, repeats, batch_size=1, seed=5).epoch(3)
    assert np.array_equal(r0, one[0::2][:len(r0)]) and np.array_equal(r1, one[1::2][:len(r1)])
    every = EpochSampler(labels, 2, None, None, batch_size=1, seed=5)           # no cap: all, once
    assert not every.resampled and sorted(every.epoch(0).tolist()) == list(range(90))
    legacy = torch.Generator().manual_seed(5)         # the permutation stream of runs made before the draw
    for e in range(3):
        assert np.array_equal(every.epoch(e), torch.randperm(90, generator=legacy))
    assert sorted(EpochSampler(labels, None, None, None, 1, 0).epoch(0).tolist()) == list(range(90))
    assert unknown_cap(90, 0.1) == 10 and unknown_cap(0, 0.1) == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_upload_copies_a_read_only_memmap_in_chunks(tmp_path, device):
    """What DeviceClips puts on the GPU: the cache's read-only memmap, copied a few clips at a
    time, equal to it, with no warning printed at every training."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    audio = np.random.default_rng(0).integers(-32768, 32767, (10, 50)).astype(np.int16)
    np.save(tmp_path / "audio.npy", audio)
    mm = np.load(tmp_path / "audio.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upload(mm, torch.device(device), chunk=3)          # 3 + 3 + 3 + 1 clips
    assert out.dtype == torch.int16 and out.device.type == device
    assert np.array_equal(out.cpu().numpy(), audio)
