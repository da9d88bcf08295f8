"""profiles: the gpu profile's short mode (CRATE_GPU_SHORT) and pick's fallbacks."""

from __future__ import annotations

import pytest

from crate_lite import profiles


@pytest.fixture
def env(monkeypatch):
    def set_(profile: str | None, short: str | None = None) -> None:
        for name, value in (("CRATE_PROFILE", profile), ("CRATE_GPU_SHORT", short)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_


ALL = dict(smoke=1, cpu=2, gpu=3, gpu_short=4)


@pytest.mark.parametrize("profile, short, expected", [
    ("smoke", None, 1), ("smoke", "1", 1), ("cpu", "1", 2), (None, "yes", 2),
    ("gpu", None, 3), ("gpu", "0", 3), ("gpu", "off", 3), ("gpu", "", 3),
    ("gpu", "1", 4), ("gpu", "true", 4), ("gpu", " ON ", 4),
])  # fmt: skip
def test_pick_selects_gpu_short_only_in_the_gpu_profile_with_the_switch_on(env, profile, short, expected):
    env(profile, short)
    assert profiles.pick(**ALL) == expected
    assert profiles.short() == (expected == 4)


def test_fallbacks_gpu_short_to_gpu_to_cpu(env):
    env("gpu", "1")
    assert profiles.pick(smoke=1, cpu=2, gpu=3) == 3  # no gpu_short: the gpu value
    assert profiles.pick(smoke=1, cpu=2) == 2  # no gpu value either: the cpu value
    assert profiles.pick(smoke=1, cpu=2, gpu_short=4) == 4
    env("gpu", "0")
    assert profiles.pick(smoke=1, cpu=2, gpu_short=4) == 2


def test_falsy_values_are_returned_not_skipped(env):
    env("gpu", "1")
    assert profiles.pick(smoke=1, cpu=2, gpu=3, gpu_short=0) == 0
    assert profiles.pick(smoke=1, cpu=2, gpu=False) is False


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_a_bad_switch_is_refused_naming_the_variable(env, profile):
    env(profile, "maybe")
    with pytest.raises(ValueError, match="CRATE_GPU_SHORT: expected one of 1/true/yes/on"):
        profiles.short()
    if profile == "gpu":
        with pytest.raises(ValueError, match="CRATE_GPU_SHORT"):
            profiles.pick(**ALL)
