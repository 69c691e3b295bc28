"""Settings for the whole suite."""

from hypothesis import HealthCheck, settings

# CI runs on a loaded 2-core machine: a per-example deadline or a slow data generator there says nothing about
# the code, so property tests are judged on their assertions only.
settings.register_profile(
    "gridbot",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("gridbot")
