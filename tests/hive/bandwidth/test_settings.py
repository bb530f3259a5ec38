"""The bandwidth settings as the hive reads them at start: units, zones, and a clear error naming the
bad part of a schedule, from HiveSettings and from `rbee-hive` itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.hive.settings import HiveSettings
from services.service_start import service_argv
from shared.waiting import free_port


def test_rates_take_units_and_the_defaults_leave_everything_off(tmp_path: Path) -> None:
    settings = HiveSettings(models_dir=tmp_path, nic="eth0", nic_budget="1GB", bandwidth_floor="2MiB")
    assert (settings.nic_budget, settings.bandwidth_floor) == (10**9, 2 * 2**20)
    plain = HiveSettings(models_dir=tmp_path)
    assert (plain.bandwidth_schedule, plain.nic, plain.nic_budget, plain.bandwidth_tz) == (None, None, None, None)
    assert plain.bandwidth_floor == 1_000_000 and plain.bandwidth_tick == 1.0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"bandwidth_schedule": "22:00-06:00=0,05:00-07:00=5MB"}, "windows 22:00-06:00 and 05:00-07:00 overlap"),
        ({"bandwidth_schedule": "22:00-06:00=lots"}, "bad rate 'lots'"),
        ({"bandwidth_tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"nic_budget": "fast"}, "bad rate 'fast'"),
        ({"nic": "eth0; rm -rf /"}, "nic"),
    ],
)
def test_a_bad_bandwidth_setting_names_itself(tmp_path: Path, fields: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError, match=says.replace("(", r"\(")):
        HiveSettings(models_dir=tmp_path, **fields)


def test_rbee_hive_refuses_to_start_on_a_bad_schedule_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HIVE_MODELS_DIR": str(tmp_path), "HIVE_BANDWIDTH_SCHEDULE": "22:00-06:00=0,23:00-01:00=1MB"}
    result = subprocess.run(
        service_argv("services.hive.main", free_port()), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rbee-hive: invalid settings: bandwidth_schedule: Value error, windows 22:00-06:00 and 23:00-01:00 overlap"
    ), result.stderr
