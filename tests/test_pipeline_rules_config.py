"""Rule settings in the YAML: schedules, camera and zone overrides, validation with file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonsite.config import ConfigError
from nonsite.pipeline.rules import zone_rule_config
from nonsite.pipeline.violations import load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


CAMERA = """cameras:
  - id: a
    source: {url: a.mp4}
    rules:
      stray_dog: {dwell_s: 60}
    zones:
      - id: walk
        kind: sidewalk
        polygon: [[0, 0], [1, 0], [1, 1]]
        schedule:
          - {days: [mon, tue, wed, thu, fri], start: 07:30, end: '19:00'}
        rules:
          sidewalk_parking: {dwell_s: 30, min_confidence: 0.45}
      - id: market
        kind: vending_allowed
        polygon: [[0, 0], [1, 0], [1, 1]]
        schedule:
          - {start: '18:00', end: '02:00'}
rules:
  street_vending:
    schedule:
      - {start: '07:00', end: '22:00'}
"""


def test_schedules_and_overrides_load_and_resolve(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, CAMERA))
    cam = cfg.cameras[0]
    walk = cam.zones[0]
    assert walk.schedule[0].start == "07:30"  # unquoted 07:30 is a time, not YAML 1.1's sexagesimal 450
    eff = zone_rule_config(cam, cfg.rules, walk, "sidewalk_parking")
    assert (eff.dwell_s, eff.min_confidence) == (30, 0.45)
    assert eff.max_gap_s == cfg.rules.sidewalk_parking.max_gap_s  # unset keys inherit
    assert cfg.rules.street_vending.schedule[0].end == "22:00"
    assert cam.rules is not None and cam.rules.stray_dog is not None and cam.rules.stray_dog.dwell_s == 60


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("start: 07:30", "start: '25:00'", ":11: cameras[0].zones[0].schedule[0].start: start '25:00' is not a time"),
        ("end: '19:00'", "end: '7pm'", ":11: cameras[0].zones[0].schedule[0].end: end '7pm' is not a time of day"),
        ("days: [mon, tue, wed, thu, fri]", "days: [monday]", ":11: cameras[0].zones[0].schedule[0].days[0]:"),
        ("{start: '18:00', end: '02:00'}", "{start: '18:00', end: '18:00'}", "is empty; for a whole day"),
        ("sidewalk_parking: {dwell_s: 30, min_confidence: 0.45}", "stray_dog: {dwell_s: 30}",
         "zone 'walk' of kind sidewalk is watched by sidewalk_parking; remove rules.stray_dog here"),
        ("sidewalk_parking: {dwell_s: 30, min_confidence: 0.45}", "sidewalk_parking: {dwell_s: -3}",
         ":13: cameras[0].zones[0].rules.sidewalk_parking.dwell_s: Input should be greater than 0"),
        ("sidewalk_parking: {dwell_s: 30, min_confidence: 0.45}", "sidewalk_parking: {dwel_s: 3}",
         ":13: cameras[0].zones[0].rules.sidewalk_parking.dwel_s: unknown key"),
        ("stray_dog: {dwell_s: 60}", "stray_dog: {person_distance: 0}",
         ":5: cameras[0].rules.stray_dog.person_distance"),
    ],
)
def test_bad_rule_settings_name_file_line_key_and_fix(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in CAMERA
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, CAMERA.replace(old, new)))
    assert str(tmp_path / "c.yaml") in str(e.value)
    assert expected in str(e.value), str(e.value)


def test_dwell_set_twice_on_a_zone_is_an_error(tmp_path: Path) -> None:
    text = CAMERA.replace("        schedule:\n          - {days",
                          "        dwell_s: 10\n        schedule:\n          - {days")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert "sets dwell_s twice" in str(e.value)


def test_allow_zones_take_no_rule_overrides(tmp_path: Path) -> None:
    text = CAMERA.replace("        schedule:\n          - {start: '18:00'",
                          "        rules: {street_vending: {dwell_s: 5}}\n"
                          "        schedule:\n          - {start: '18:00'")
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert "exempts areas and is watched by no rule" in str(e.value)


def test_cli_config_check_reports_a_bad_time_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = write(tmp_path, CAMERA.replace("start: 07:30", "start: '7:75'"))
    r = subprocess.run([sys.executable, "-m", "nonsite", "config", "check", str(p)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{p}:11: cameras[0].zones[0].schedule[0].start: start '7:75' is not a time of day" in r.stderr
