"""The bureau's organisation: grids by camera or by location, routing precedence, the fallback team, and
errors that name the file, line, key and fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nonsite.cases.organisation import Location, load_organisation, point_in_polygon
from nonsite.config import load_config
from nonsite.config.loader import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "organisation.yaml"


@pytest.fixture(scope="module")
def demo_cameras() -> dict[str, object]:
    cfg = load_config(ROOT / "examples" / "demo.yaml")
    return {c.id: c.location for c in cfg.cameras}


def test_the_example_routes_the_demo_cameras(demo_cameras: dict[str, object]) -> None:
    org = load_organisation(EXAMPLE)
    assert org.unknown_cameras(demo_cameras) == []
    r = org.explain_route("sidewalk_parking", "cam-carpark-01", demo_cameras["cam-carpark-01"])
    assert (r.team and r.team.name, r.grid and r.grid.id, r.grid_by) == ("演示中队第一班组", "yanshi-east", "camera")
    # cam-fence-02 is listed nowhere: its location puts it in the same grid; a stray dog goes to the
    # district's capture team (named for the type), not the street's squad.
    dog = org.explain_route("stray_dog", "cam-fence-02", demo_cameras["cam-fence-02"])
    assert (dog.team and dog.team.id, dog.grid and dog.grid.id, dog.grid_by) == ("dog-capture", "yanshi-east",
                                                                                 "polygon")
    assert dog.as_detail() == {"team": "dog-capture", "grid": "yanshi-east", "grid_by": "polygon",
                               "rule": ["dog-capture", 0], "fallback": False}
    junction = demo_cameras["cam-junction-03"]
    assert org.route("street_vending", "cam-junction-03", junction).id == "yanshi-group-2"  # type: ignore[union-attr]
    assert org.route("sidewalk_parking", "cam-junction-03", junction).id == "yanshi-group-2"  # type: ignore[union-attr]
    # A type no group is named for falls to the street's squad (every type, street-wide).
    assert org.route("illegal_dumping", "cam-junction-03", junction).id == "yanshi-squad"  # type: ignore[union-attr]
    street = org.street_of("shifan-jie")
    district = org.district_of("shifan-jie")
    assert street is not None and street.name == "演示街道" and district is not None and district.name == "示范区"


def test_no_grid_goes_to_the_fallback_team() -> None:
    org = load_organisation(EXAMPLE)
    lost = org.explain_route("sidewalk_parking", "cam-nowhere", Location(lat=39.9, lon=116.4))  # Beijing
    assert (lost.team and lost.team.id, lost.grid, lost.grid_by, lost.fallback) == ("duty-desk", None, "none", True)
    assert org.route("sidewalk_parking", None, None).id == "duty-desk"  # type: ignore[union-attr]
    # A stray dog anywhere in the district, by location only.
    assert org.route("stray_dog", None, {"lat": 31.2420, "lon": 121.4820}).id == "dog-capture"  # type: ignore[union-attr]
    assert org.route("street_vending", None, {"lat": 31.2420, "lon": 121.4820}).id == "xincheng-squad"  # type: ignore[union-attr]


def _org(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "org.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """\
districts:
  - id: d1
    name: 一区
    streets:
      - id: s1
        name: 一街道
        grids:
          - {id: g1, name: 一网格, polygon: [[0, 0], [10, 0], [10, 10], [0, 10]]}
          - {id: g2, name: 二网格, polygon: [[2, 2], [4, 2], [4, 4], [2, 4]]}
          - {id: g3, name: 三网格, cameras: [cam-3]}
teams:
  - {id: everywhere, name: 全区, responsible_for: [{}]}
  - {id: street, name: 街道队, responsible_for: [{areas: [s1]}]}
  - {id: grid2-parking, name: 二网格停车组, responsible_for: [{types: [parking], areas: [g2]}]}
  - {id: dogs, name: 犬队, responsible_for: [{types: [dogs], areas: [d1]}]}
  - {id: noisy, name: 全区噪音, responsible_for: [{types: [noise]}]}
"""


def test_precedence_type_then_narrowest_area(tmp_path: Path) -> None:
    org = load_organisation(_org(tmp_path, BASE))
    inner = Location(lat=3, lon=3)  # in g2 and g1: the smaller polygon wins
    assert org.grid_of(None, inner)[0].id == "g2"  # type: ignore[union-attr]
    assert org.route("parking", None, inner).id == "grid2-parking"  # type: ignore[union-attr]
    assert org.route("vending", None, inner).id == "street"  # street-wide beats everywhere
    assert org.route("dogs", None, inner).id == "dogs"  # named type beats a narrower area for every type
    assert org.route("noise", None, inner).id == "noisy"  # named type everywhere beats the street for every type
    assert org.route("parking", None, Location(lat=8, lon=8)).id == "street"  # g1: not grid2-parking's grid
    assert org.route("parking", "cam-3", Location(lat=3, lon=3)).id == "street"  # listed camera wins: g3
    assert org.route("parking", None, Location(lat=50, lon=50)).id == "everywhere"  # no grid
    assert org.route("dogs", None, Location(lat=50, lon=50)).id == "everywhere"  # district team needs a grid
    no_fallback = load_organisation(_org(tmp_path, BASE.replace("  - {id: everywhere, name: 全区, "
                                                                "responsible_for: [{}]}\n", "")))
    assert no_fallback.route("parking", None, None) is None


def test_point_in_polygon() -> None:
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert point_in_polygon(0.5, 0.5, square) and not point_in_polygon(1.5, 0.5, square)
    ell = [(0.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 2.0), (0.0, 2.0)]  # an L: concave
    assert point_in_polygon(0.5, 1.5, ell) and not point_in_polygon(1.5, 1.5, ell)


def test_leaders_members_and_groups() -> None:
    org = load_organisation(EXAMPLE)
    assert [t.id for t in org.teams_of("li.qiang")] == ["yanshi-squad", "yanshi-group-1"]
    assert org.leader_of("yanshi-group-1") == "li.qiang"
    assert org.leader_of("yanshi-group-2") == "wang.jun"  # no leader: the squad's
    assert org.leader_of("nope") is None
    team = org.team("duty-desk")
    assert team is not None and team.people == ("zhou.min", "chen.jing", "liu.yang")


def _line(path: Path, needle: str) -> int:
    return next(i for i, s in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in s)


@pytest.mark.parametrize(("old", "new", "needle", "message"), [
    ("responsible_for: [{types: [dogs], areas: [d1]}]", "responsible_for: [{types: [dogs], areas: [d9]}]", "d9",
     r"teams\[3\]\.responsible_for\[0\]\.areas\[0\]: unknown area 'd9'; use the id of a grid"),
    ("{id: g3, name: 三网格, cameras: [cam-3]}", "{id: g3, name: 三网格, cameras: [cam-3]}\n"
     "          - {id: g4, name: 四网格, cameras: [cam-3]}", "g4",
     r"districts\[0\]\.streets\[0\]\.grids\[3\]\.cameras\[0\]: camera 'cam-3' is already in grid 'g3'"),
    ("{id: g2, name: 二网格,", "{id: s1, name: 二网格,", "id: s1, name: 二网格",
     r"districts\[0\]\.streets\[0\]\.grids\[1\]\.id: id 's1' is already the id of a street"),
    ("{id: noisy, name: 全区噪音, responsible_for: [{types: [noise]}]}",
     "{id: noisy, name: 全区噪音, responsible_for: [{areas: [s1]}]}", "id: noisy",
     r"teams\[4\]\.responsible_for\[0\]: teams 'street' and 'noisy' are both responsible for type 'parking' in "
     r"grid 'g1' at the same precedence; narrow one"),
    ("polygon: [[0, 0], [10, 0], [10, 10], [0, 10]]", "polygon: [[0, 0], [200, 0], [10, 10]]", "200",
     r"grids\[0\]\.polygon: Value error|grids\[0\]\.polygon: point \[200\.0, 0\.0\] is not \[lon, lat\]"),
    ("{id: everywhere, name: 全区,", "{id: everywhere, name: 全区, colour: red,", "colour",
     r"teams\[0\]\.colour: unknown key"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, needle: str, message: str) -> None:
    assert old in BASE
    path = _org(tmp_path, BASE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_organisation(path)
    first = str(err.value).splitlines()[0]
    assert re.match(rf"{re.escape(str(path))}:(\d+): .*(?:{message})", first), first
    assert int(first.split(":")[1]) <= _line(path, needle)


def test_fallback_and_parent_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"org\.yaml:\d+: fallback_team: unknown team 'desk'"):
        load_organisation(_org(tmp_path, BASE + "fallback_team: desk\n"))
    bad_parent = BASE + "  - {id: g, name: 组, kind: group, parent: dogs}\n"
    with pytest.raises(ConfigError, match=r"teams\[5\]\.parent: only a group .* must be a squad"):
        load_organisation(_org(tmp_path, bad_parent.replace("{id: dogs, name: 犬队,", "{id: dogs, name: 犬队, "
                                                                                     "kind: desk,")))


def test_the_config_points_at_the_organisation(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "nonsite.yaml").write_text("cases:\n  organisation: org.yaml\n", encoding="utf-8")
    cfg = load_config(tmp_path / "nonsite.yaml")
    assert cfg.cases.organisation == str(tmp_path / "org.yaml")
    assert load_organisation(cfg.cases.organisation).fallback_team == "duty-desk"


def test_the_bureau_modules_load_no_detection_code() -> None:
    code = ("import sys, nonsite.cases.organisation, nonsite.cases.deadlines, nonsite.cases.reminders, "
            "nonsite.cases.statistics; "
            "bad = [m for m in ('numpy', 'cv2', 'torch', 'onnxruntime', 'openvino', "
            "'nonsite.pipeline', 'nonsite.models', 'nonsite.streams') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
