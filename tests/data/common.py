"""Helpers shared by the data tests."""
from __future__ import annotations

import datetime as dt


def check_manifest(info: dict, *, source: str, provenance: dict) -> None:
    """The fields every provenance manifest carries (software, version, UTC creation time, source, provenance)."""
    assert info["software"] == "medsynth"
    assert isinstance(info["version"], str) and info["version"]
    created = dt.datetime.fromisoformat(info["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    assert info["source"] == source
    assert info["provenance"] == provenance
