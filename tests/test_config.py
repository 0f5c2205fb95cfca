import json

import pytest

from pipeline.config import (AugmentConfig, ConfigError, FeatureConfig, ModelConfig, RunConfig, TrainConfig)


def make(**kw):
    labels = ("yes", "no", "_unknown_", "_silence_")
    return RunConfig(labels=labels, model=ModelConfig(n_classes=4, hidden=32), **kw)


def test_round_trip_dict_and_json():
    cfg = make(train=TrainConfig(epochs=3, augment=AugmentConfig(snr_db=(5.0, 10.0))))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg   # lists back to tuples


def test_derived_sizes():
    f = FeatureConfig()
    assert f.n_freqs == 201
    assert f.n_frames == 98 == f.frames_for(16000)
    assert f.frames_for(399) == 0 and f.frames_for(400) == 1 and f.frames_for(560) == 2


@pytest.mark.parametrize("bad", [dict(n_fft=0), dict(hop_length=500), dict(n_mfcc=80), dict(f_max=9000.0),
                                 dict(log_eps=0.0)])
def test_bad_feature_values_raise(bad):
    with pytest.raises(ConfigError):
        FeatureConfig(**bad)


def test_mismatches_raise():
    with pytest.raises(ConfigError, match="n_classes"):
        RunConfig(labels=("a", "b", "c"), model=ModelConfig(n_classes=2))
    with pytest.raises(ConfigError, match="unique"):
        RunConfig(labels=("a", "a"), model=ModelConfig(n_classes=2))
    with pytest.raises(ConfigError, match="unknown FeatureConfig keys"):
        RunConfig.from_dict({**make().to_dict(), "features": {"n_fft": 400, "colour": "red"}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")
