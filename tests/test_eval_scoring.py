"""Matching alerts to truth episodes and the scores of `nonsite eval` (no video)."""

from __future__ import annotations

import pytest

from nonsite.pipeline.evaluation import Alert, ClipResult, match, report_lines, score


def ep(type_: str, zone: str, start: float, end: float) -> dict[str, object]:
    return {"type": type_, "zone": zone, "start_s": start, "end_s": end}


def alert(type_: str, zone: str, confirm: float) -> Alert:
    return Alert(type_, zone, confirm - 3, confirm, f"e{confirm}")


def result(name: str, seconds: float, episodes: list[dict[str, object]], alerts: list[Alert],
           dwell: dict[str, float] | None = None) -> ClipResult:
    r = ClipResult(name, name + ".mp4", int(seconds * 5), seconds, episodes, alerts, dwell or {})
    match(r)
    return r


def test_an_alert_matches_an_episode_of_its_type_and_zone_that_contains_its_confirmation() -> None:
    r = result("c", 60, [ep("stray_dog", "lane", 10, 30)],
               [alert("stray_dog", "lane", 35), alert("stray_dog", "yard", 20), alert("sidewalk_parking", "lane", 20),
                alert("stray_dog", "lane", 14)], {"lane": 3})
    assert [a.episode for a in r.alerts] == [None, None, None, 0]
    assert r.alerts[3].delay_s == pytest.approx(1.0)  # 14 - (10 + 3)
    assert (r.tp, r.fp, r.fn) == (1, 3, 0)


def test_each_episode_matches_once_and_overlapping_episodes_each_get_one() -> None:
    # Two cars in one zone; three alerts: the third (a re-alert) is a false alert.
    r = result("c", 60, [ep("sidewalk_parking", "curb", 0, 50), ep("sidewalk_parking", "curb", 5, 20)],
               [alert("sidewalk_parking", "curb", 12), alert("sidewalk_parking", "curb", 15),
                alert("sidewalk_parking", "curb", 40)], {"curb": 10})
    # 12 s takes the episode that ends first (5-20), 15 s the long one, 40 s finds none left
    assert [a.episode for a in r.alerts] == [1, 0, None]
    assert [a.delay_s for a in r.alerts] == [-3.0, 5.0, None]


def test_scores_per_type_and_overall() -> None:
    a = result("a", 1800, [ep("stray_dog", "z", 0, 100), ep("stray_dog", "z", 200, 300)],
               [alert("stray_dog", "z", 30), alert("stray_dog", "z", 500)], {"z": 20})
    b = result("b", 1800, [], [alert("street_vending", "z", 100)])
    s = score([a, b])
    assert s["camera_hours"] == pytest.approx(1.0)
    dog = s["per_type"]["stray_dog"]
    assert dog == {"episodes": 2, "tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5,
                   "false_alerts_per_camera_hour": 1.0, "median_delay_s": 10.0}
    vend = s["per_type"]["street_vending"]
    assert (vend["precision"], vend["recall"], vend["false_alerts_per_camera_hour"]) == (0.0, None, 1.0)
    park = s["per_type"]["sidewalk_parking"]
    assert (park["precision"], park["recall"], park["median_delay_s"]) == (None, None, None)
    assert s["per_type"]["all"]["fp"] == 2 and s["per_type"]["all"]["tp"] == 1
    text = "\n".join(report_lines([a, b], s))
    assert "stray_dog" in text and "FA/cam-h" in text and "median delay s" in text
    assert "2 clips, 3600.0 s of video (1.0000 camera-hours)" in text
