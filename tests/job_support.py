"""Small helpers shared by the tests that run whole jobs: settings with a test key, CSV I/O."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from batchrun.config import Settings, environment_settings

TEST_KEY = "sk-test-0123456789abcdef"


def settings_for(base_url: str, key: str = TEST_KEY, **options: Any) -> Settings:
    """Settings sending to ``base_url`` with ``key`` as if read from OPENAI_API_KEY."""
    return Settings(
        **environment_settings({"base_url": base_url, **options}, {"OPENAI_API_KEY": key})
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV output's rows as dicts of text."""
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def command(source: Path, output: Path, base_url: str, *extra: str) -> list[str]:
    """``python -m batchrun run SOURCE -o OUTPUT --base-url URL --no-progress EXTRA...``."""
    return [
        *(sys.executable, "-m", "batchrun", "run", str(source), "-o", str(output)),
        *("--base-url", base_url, "--no-progress", *extra),
    ]
