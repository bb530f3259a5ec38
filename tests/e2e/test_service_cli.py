"""The services' command lines: bad settings are one line and exit 2; the URL a hive advertises."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from services.hive.settings import HiveSettings
from tests.support import REPO


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        ("services.hive.main", {"HIVE_PORT": "abc"}, "rbee-hive: invalid settings: port"),
        ("services.hive.main", {"HIVE_MAX_CONCURRENT": "0"}, "rbee-hive: invalid settings: max_concurrent"),
        ("services.queen.main", {"QUEEN_HIVES": "no-equals-sign"}, "rbee-queen: invalid settings: hives"),
    ],
)
def test_bad_settings_are_one_line_not_a_traceback(module: str, env: dict[str, str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_advertised_url() -> None:
    assert HiveSettings(host="127.0.0.1", port=9300).advertised_url == "http://127.0.0.1:9300"
    assert HiveSettings(public_url="http://hive-a:9200/").advertised_url == "http://hive-a:9200"
    # bound to every interface: 0.0.0.0 reaches nothing, the host name does
    assert HiveSettings(host="0.0.0.0", port=9200).advertised_url == f"http://{socket.gethostname()}:9200"
