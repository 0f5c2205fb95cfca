import json

import pytest

from pipeline.config import AugmentConfig, ConfigError, FeatureConfig, ModelConfig, RunConfig, TrainConfig
from pipeline.config_overrides import apply_overrides


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


def test_set_overrides_any_field_and_survives_the_round_trip():
    cfg = apply_overrides(make(), ["features.log_eps=1e-4", "train.augment.vtlp=0.8,1.25", "train.unknown_fraction=0.07",
                                   "train.augment.free_position=True", "model.hidden=64", "train.augment.snr_db=(0, 20)"])
    assert cfg.features.log_eps == 1e-4 and cfg.train.augment.vtlp == (0.8, 1.25) and cfg.model.hidden == 64
    assert cfg.train.unknown_fraction == 0.07 and cfg.train.augment.free_position is True
    assert cfg.train.augment.snr_db == (0.0, 20.0) and all(isinstance(x, float) for x in cfg.train.augment.snr_db)
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert apply_overrides(make(), []) == make()
    assert apply_overrides(make(), ["train.augment.free_position=true"]).train.augment.free_position is True
    assert apply_overrides(cfg, ["train.augment.free_position=false"]).train.augment.free_position is False


@pytest.mark.parametrize("item,needle", [
    ("train.epochs", "expected SECTION.FIELD=VALUE"), ("labels=1", "must start with"),
    ("train.foo=1", "no field 'foo'"), ("train.augment=1", "is a section"), ("train.epochs.x=1", "not a section"),
    ("train.epochs=abc", "cannot read 'abc'"), ("train.augment.free_position=yes", "cannot read 'yes'"), ("train.epochs=2.5", "not a value like 40"),
    ("train.augment.vtlp=0.9", "not a value like (0.88, 1.12)"), ("train.augment.vtlp=1,2,3", "not a value like"),
    ("features.f_max=9000", "f_max"), ("model.n_classes=3", "n_classes")])
def test_set_errors_name_the_key(item, needle):
    with pytest.raises(ConfigError) as e:
        apply_overrides(make(), [item])
    assert str(e.value).startswith(f"--set {item.split('=')[0]}") and needle in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="keeps the --init model's features"):
        apply_overrides(make(), ["features.log_eps=1e-4"], fixed=("features", "model"))
