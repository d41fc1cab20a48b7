"""The bureau's organisation and case routing: districts → streets (街道) → grids (网格), teams (中队/班组).

An organisation file (YAML, ``cases.organisation`` in the configuration; example: ``examples/organisation.yaml``)
describes where cases come from and who handles them:

- **districts** hold **streets** (街道办事处), streets hold **grids** (网格). A grid is the unit of routing: it
  lists its cameras (``cameras:``) and/or has a ``polygon`` of ``[lon, lat]`` points (WGS84, the datum of the
  cameras' ``location`` in the main configuration; a polygon traced on a GCJ-02 map such as Gaode/Tencent is
  offset by a few hundred metres and must be converted first).
- **teams** are squads (中队) and their groups (班组, ``parent:`` names the squad). Each has members (console user
  names), a leader, and what it is responsible for: violation types in areas (grids, streets or districts).
- ``fallback_team`` takes what no team is responsible for (usually the command centre's duty desk 指挥中心).

**Which grid a camera is in** (:meth:`Organisation.grid_of`): the grid that lists the camera id; otherwise the
grid whose polygon holds the camera's location (the smallest such polygon when several overlap, then the first
in the file); otherwise none.

**Which team a case goes to** (:meth:`Organisation.route`), in this order of precedence:

1. a responsibility that names the case's type beats one for every type (a district's stray-dog capture team
   wins over a grid's general squad);
2. then the narrower area: the grid itself, then its street, then its district, then "everywhere" (no
   ``areas:``); a case whose camera is in no grid matches only "everywhere" responsibilities;
3. nothing matches: the ``fallback_team`` (None when there is none).

Two teams that tie at the top for some grid and type are refused when the file is loaded (ambiguous routing
is a configuration error, not a coin toss). :meth:`Organisation.explain_route` says how a case was routed (for
the audit trail).

**Roles** that come with the organisation (in the console's roles since the wiring of issue 14; the workflow
roles operator 值班员, reviewer 法制审核员 and admin stay as they are):

- **supervisor** (督查): sees every case and team, issues 督办 (supervision orders with a new deadline,
  :mod:`nonsite.cases.reminders`), receives the escalations nobody answered;
- **field officer** (执法队员): a team member; sees and works only the tasks of their teams (feedback, photos);
- **leader** (领导): read-only view of everything (statistics, rankings, overdue reports); a team's ``leader``
  receives its escalations.

Pure data and pure functions: nothing here touches the database or the network.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from nonsite.config.base import Section
from nonsite.config.loader import ConfigError, LocatedError, load_model

__all__ = [
    "BaseMap",
    "District",
    "Grid",
    "Location",
    "Organisation",
    "Responsibility",
    "Routing",
    "Street",
    "Team",
    "base_map_file",
    "WatchedOrganisation",
    "load_organisation",
    "point_in_polygon",
]

_log = logging.getLogger(__name__)
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_USER = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
#: Area levels, narrowest first (the precedence of a responsibility's area).
AREA_LEVELS: Mapping[str, int] = {"grid": 3, "street": 2, "district": 1, "everywhere": 0}
#: How a camera's grid was found: listed by the grid, by the camera's location in a polygon, not at all.
GridBy = Literal["camera", "polygon", "none"]


class Grid(Section):
    """A grid (网格): the unit a case is routed by."""

    id: str = Field(pattern=_ID, description="Grid id, unique among districts, streets and grids.")
    name: str = Field(min_length=1, description="Name shown to users (Chinese), e.g. 演示路东网格.")
    polygon: list[tuple[float, float]] | None = Field(
        None,
        description="Boundary as [lon, lat] points (WGS84, like the cameras' location), at least three; cameras "
        "not listed under `cameras` belong to the grid whose polygon holds their location.",
    )
    cameras: list[str] = Field(
        default_factory=list, description="Camera ids in this grid (wins over the polygon)."
    )

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is None:
            return v
        if len(v) < 3:
            raise ValueError(f"a polygon needs at least three [lon, lat] points, not {len(v)}")
        for lon, lat in v:
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"point [{lon}, {lat}] is not [lon, lat] (lon -180..180, lat -90..90); "
                                 "write longitude first")
        if abs(_area(v)) < 1e-14:
            raise ValueError("the polygon has no area (its points lie on a line); check the coordinates")
        return v


class Street(Section):
    """A street (街道 / 街道办事处)."""

    id: str = Field(pattern=_ID, description="Street id, unique among districts, streets and grids.")
    name: str = Field(min_length=1, description="Name shown to users, e.g. 演示街道.")
    grids: list[Grid] = Field(default_factory=list, description="The street's grids.")


class District(Section):
    """A district (区/县)."""

    id: str = Field(pattern=_ID, description="District id, unique among districts, streets and grids.")
    name: str = Field(min_length=1, description="Name shown to users, e.g. 示范区.")
    streets: list[Street] = Field(default_factory=list, description="The district's streets.")


class Responsibility(Section):
    """What a team handles: some violation types in some areas."""

    types: list[str] = Field(
        default_factory=list, description="Violation types (e.g. sidewalk_parking); empty: every type."
    )
    areas: list[str] = Field(
        default_factory=list,
        description="Ids of grids, streets or districts (a street or district covers all its grids); "
        "empty: everywhere, including cameras in no grid.",
    )


class Team(Section):
    """A squad (中队) or a group (班组) of field officers."""

    id: str = Field(pattern=_ID, description="Team id (stored on cases routed to it).")
    name: str = Field(min_length=1, description="Name shown to users, e.g. 演示街道城管执法中队.")
    kind: Literal["squad", "group", "desk"] = Field(
        "squad", description="squad (中队), group (班组, under a squad) or desk (a command centre's duty desk)."
    )
    parent: str | None = Field(None, description="The squad a group belongs to (groups only).")
    leader: str | None = Field(
        None, pattern=_USER, description="Console user name of the team leader (receives escalations)."
    )
    members: list[str] = Field(
        default_factory=list, description="Console user names of the members (field officers)."
    )
    responsible_for: list[Responsibility] = Field(
        default_factory=list, description="Types and areas this team handles (see the routing precedence)."
    )

    @field_validator("members")
    @classmethod
    def _members(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.match(_USER, name):
                raise ValueError(f"'{name}' is not a console user name (letters, digits, . _ @ -)")
        if len(set(v)) != len(v):
            raise ValueError("a member is listed twice; list each user once")
        return v

    @property
    def people(self) -> tuple[str, ...]:
        """Members and the leader (each once)."""
        return tuple(dict.fromkeys([*([self.leader] if self.leader else []), *self.members]))


@dataclass(frozen=True)
class Location:
    """A point (WGS84)."""

    lat: float
    lon: float


@dataclass(frozen=True)
class Routing:
    """How a case was routed (what the audit trail records)."""

    team: Team | None
    grid: Grid | None
    grid_by: GridBy
    rule: tuple[str, int] | None  # (team id, index of its responsibility) that matched; None: fallback or nothing
    fallback: bool

    def as_detail(self) -> dict[str, Any]:
        return {
            "team": self.team.id if self.team else None,
            "grid": self.grid.id if self.grid else None,
            "grid_by": self.grid_by,
            "rule": list(self.rule) if self.rule else None,
            "fallback": self.fallback,
        }


def _area(poly: list[tuple[float, float]]) -> float:
    return 0.5 * sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(poly, [*poly[1:], poly[0]], strict=True))


def point_in_polygon(lon: float, lat: float, polygon: list[tuple[float, float]]) -> bool:
    """Whether [lon, lat] lies inside ``polygon`` (even-odd ray casting; a point on an edge may go either way)."""
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


_Rank = tuple[int, int]


class BaseMap(Section):
    """The picture the statistics page draws its hotspots on (no online tiles): a PNG or JPEG of the area, north
    up. A camera or grid is placed by its ``points`` entry (pixels), else by its location (a camera: where its cases
    were; a grid: the mean of its polygon's points) through ``bounds``; what can be placed neither way is listed
    beside the map."""

    image: str = Field(min_length=1, description="PNG or JPEG file, relative to the organisation file (or absolute).")
    size: tuple[int, int] = Field(description="[width, height] of the image in pixels.")
    bounds: tuple[float, float, float, float] | None = Field(
        None, description="[west, south, east, north]: the longitudes and latitudes (WGS84) of the image's left, "
        "bottom, right and top edges (a plain linear mapping: fine for a district-sized picture).")
    points: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Camera or grid id -> [x, y] pixel position on the image (0,0: top "
        "left); wins over bounds.")

    @field_validator("size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1 or max(v) > 20000:
            raise ValueError(f"size [{v[0]}, {v[1]}] is not [width, height] in pixels (1 to 20000)")
        return v

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if v is not None:
            west, south, east, north = v
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise ValueError(f"bounds {list(v)} are not [west, south, east, north] (west < east, south < north)")
        return v

    def pixel(self, lon: float, lat: float) -> tuple[float, float] | None:
        """Where [lon, lat] falls on the image (None without bounds or outside them)."""
        if self.bounds is None:
            return None
        west, south, east, north = self.bounds
        if not (west <= lon <= east and south <= lat <= north):
            return None
        w, h = self.size
        return (lon - west) / (east - west) * w, (north - lat) / (north - south) * h


class Organisation(Section):
    """The organisation file: districts, streets, grids, teams, and the fallback team."""

    version: str = Field("", description="Version label of this file (stored with each routing decision).")
    districts: list[District] = Field(default_factory=list, description="Districts with their streets and grids.")
    teams: list[Team] = Field(default_factory=list, description="Squads and groups.")
    fallback_team: str | None = Field(
        None, description="Team id that gets every case no team is responsible for (e.g. the duty desk)."
    )
    base_map: BaseMap | None = Field(
        None, description="Picture of the area for the statistics page's hotspot view (cameras and grids by count)."
    )

    _areas: dict[str, tuple[str, frozenset[str]]] = PrivateAttr(default_factory=dict)  # id -> (level, grid ids)
    _grids: dict[str, Grid] = PrivateAttr(default_factory=dict)
    _street_of: dict[str, Street] = PrivateAttr(default_factory=dict)
    _district_of: dict[str, District] = PrivateAttr(default_factory=dict)
    _camera_grid: dict[str, str] = PrivateAttr(default_factory=dict)
    _teams: dict[str, Team] = PrivateAttr(default_factory=dict)
    _source: Path | None = PrivateAttr(default=None)  # the file it was loaded from (base_map.image is relative)

    @model_validator(mode="after")
    def _index(self) -> Organisation:
        seen: dict[str, str] = {}

        def area_id(id_: str, loc: tuple[Any, ...], level: str, grids: Iterable[str]) -> None:
            if id_ in seen:
                raise LocatedError((*loc, "id"), f"id '{id_}' is already the id of a {seen[id_]}; ids of districts, "
                                   "streets and grids must be unique")
            seen[id_] = level
            self._areas[id_] = (level, frozenset(grids))

        for di, d in enumerate(self.districts):
            area_id(d.id, ("districts", di), "district", (g.id for s in d.streets for g in s.grids))
            for si, s in enumerate(d.streets):
                area_id(s.id, ("districts", di, "streets", si), "street", (g.id for g in s.grids))
                for gi, g in enumerate(s.grids):
                    gloc = ("districts", di, "streets", si, "grids", gi)
                    area_id(g.id, gloc, "grid", (g.id,))
                    self._grids[g.id] = g
                    self._street_of[g.id], self._district_of[g.id] = s, d
                    for ci, cam in enumerate(g.cameras):
                        if cam in self._camera_grid:
                            raise LocatedError((*gloc, "cameras", ci), f"camera '{cam}' is already in grid "
                                               f"'{self._camera_grid[cam]}'; a camera belongs to one grid")
                        self._camera_grid[cam] = g.id
        for ti, t in enumerate(self.teams):
            if t.id in self._teams:
                raise LocatedError(("teams", ti, "id"), f"team id '{t.id}' appears twice; team ids must be unique")
            self._teams[t.id] = t
        for ti, t in enumerate(self.teams):
            self._check_team(ti, t)
        if self.fallback_team is not None and self.fallback_team not in self._teams:
            raise LocatedError(("fallback_team",), f"unknown team '{self.fallback_team}'; use one of "
                               f"{', '.join(self._teams) or '(no teams defined)'}")
        self._check_ambiguity()
        return self

    def _check_team(self, ti: int, t: Team) -> None:
        if t.parent is not None:
            parent = self._teams.get(t.parent)
            if parent is None:
                raise LocatedError(("teams", ti, "parent"), f"unknown team '{t.parent}'; name the squad's id")
            if t.kind != "group" or parent.kind != "squad":
                raise LocatedError(("teams", ti, "parent"), "only a group (kind: group) has a parent, and it must "
                                   f"be a squad; '{t.parent}' is a {parent.kind}")
        for ri, r in enumerate(t.responsible_for):
            for ai, a in enumerate(r.areas):
                if a not in self._areas:
                    raise LocatedError(("teams", ti, "responsible_for", ri, "areas", ai),
                                       f"unknown area '{a}'; use the id of a grid, street or district")

    def _candidates(self, case_type: str, grid_id: str | None) -> list[tuple[_Rank, str, int]]:
        out: list[tuple[_Rank, str, int]] = []
        for t in self.teams:
            for ri, r in enumerate(t.responsible_for):
                if r.types and case_type not in r.types:
                    continue
                if not r.areas:
                    level = 0
                elif grid_id is None:
                    continue
                else:
                    levels = [AREA_LEVELS[self._areas[a][0]] for a in r.areas if grid_id in self._areas[a][1]]
                    if not levels:
                        continue
                    level = max(levels)
                out.append(((1 if r.types else 0, level), t.id, ri))
        out.sort(key=lambda c: c[0], reverse=True)  # stable: file order among equals
        return out

    def _check_ambiguity(self) -> None:
        types = sorted({ty for t in self.teams for r in t.responsible_for for ty in r.types}) + ["\0any"]
        for grid_id in [*self._grids, None]:
            for ty in types:
                cands = self._candidates(ty, grid_id)
                rival = next((c for c in cands[1:] if c[0] == cands[0][0] and c[1] != cands[0][1]), None)
                if rival is not None:
                    where = f"grid '{grid_id}'" if grid_id else "cameras in no grid"
                    what = "every other type" if ty == "\0any" else f"type '{ty}'"
                    ti = next(i for i, t in enumerate(self.teams) if t.id == rival[1])
                    raise LocatedError(
                        ("teams", ti, "responsible_for", rival[2]),
                        f"teams '{cands[0][1]}' and '{rival[1]}' are both responsible for {what} in {where} at "
                        "the same precedence; narrow one of them (its types or areas)",
                    )

    # -- lookups ----------------------------------------------------------------------------------------

    def team(self, team_id: str) -> Team | None:
        return self._teams.get(team_id)

    def grid(self, grid_id: str) -> Grid | None:
        return self._grids.get(grid_id)

    def street_of(self, grid_id: str) -> Street | None:
        return self._street_of.get(grid_id)

    def district_of(self, grid_id: str) -> District | None:
        return self._district_of.get(grid_id)

    def teams_of(self, username: str) -> list[Team]:
        """Teams ``username`` leads or belongs to (a field officer sees these teams' tasks)."""
        return [t for t in self.teams if username in t.people]

    def leader_of(self, team_id: str) -> str | None:
        """The team's leader; a group without one escalates to its squad's leader."""
        t = self._teams.get(team_id)
        if t is None:
            return None
        if t.leader is None and t.parent is not None:
            return self.leader_of(t.parent)
        return t.leader

    def unknown_cameras(self, known: Iterable[str]) -> list[str]:
        """Camera ids listed in grids that are not in ``known`` (the configuration's cameras)."""
        k = set(known)
        return [c for c in self._camera_grid if c not in k]

    def grid_of(self, camera_id: str | None, location: Location | Any = None) -> tuple[Grid | None, GridBy]:
        """The camera's grid and how it was found: ``camera`` (listed), ``polygon`` (location) or ``none``."""
        if camera_id is not None and camera_id in self._camera_grid:
            return self._grids[self._camera_grid[camera_id]], "camera"
        point = _point(location)
        if point is not None:
            lon, lat = point
            hits = [g for g in self._grids.values() if g.polygon and point_in_polygon(lon, lat, g.polygon)]
            if hits:
                return min(hits, key=lambda g: abs(_area(g.polygon or []))), "polygon"
        return None, "none"

    def explain_route(self, case_type: str, camera_id: str | None, location: Location | Any = None) -> Routing:
        """The team a new case of ``case_type`` from ``camera_id`` (at ``location``) goes to, and why."""
        grid, by = self.grid_of(camera_id, location)
        cands = self._candidates(case_type, grid.id if grid else None)
        if cands:
            _, team_id, ri = cands[0]
            return Routing(self._teams[team_id], grid, by, (team_id, ri), False)
        fallback = self._teams.get(self.fallback_team) if self.fallback_team else None
        return Routing(fallback, grid, by, None, fallback is not None)

    def route(self, case_type: str, camera_id: str | None, location: Location | Any = None) -> Team | None:
        """The team responsible for a case (see the module's precedence); None only without a fallback team."""
        return self.explain_route(case_type, camera_id, location).team


def _point(location: Any) -> tuple[float, float] | None:
    """(lon, lat) of a :class:`Location`, a config ``LocationConfig``, or a mapping with ``lat``/``lon``."""
    if location is None:
        return None
    if isinstance(location, Mapping):
        lat, lon = location.get("lat"), location.get("lon")
    else:
        lat, lon = getattr(location, "lat", None), getattr(location, "lon", None)
    if lat is None or lon is None:
        return None
    return float(lon), float(lat)


def load_organisation(path: str | os.PathLike[str]) -> Organisation:
    """Read and validate an organisation file; raises ``ConfigError`` with ``file:line: key: fix`` lines."""
    org = load_model(Path(path), Organisation, what="the organisation file must be a mapping (districts:, teams:, "
                     "fallback_team:)")
    org._source = Path(path).resolve()
    return org


def base_map_file(org: Organisation) -> Path | None:
    """The base map's image file (relative paths against the organisation file's folder), or None."""
    if org.base_map is None:
        return None
    p = Path(org.base_map.image)
    if not p.is_absolute():
        p = (org._source.parent if org._source is not None else Path.cwd()) / p
    return p


class WatchedOrganisation:
    """An organisation file that is read again when it changes (size or modification time, looked at most once
    every ``check_s`` seconds), for a process that routes cases while an admin edits the file in the console
    (``/admin/organisation`` replaces it atomically). Attributes are the current :class:`Organisation`'s. A file
    that no longer loads (edited by hand) keeps the last good organisation, with the loader's error logged."""

    def __init__(self, path: str | os.PathLike[str], *, check_s: float = 5.0) -> None:
        self.path = Path(path)
        self.check_s = check_s
        self._org = load_organisation(self.path)
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def current(self) -> Organisation:
        """The organisation as the file says now (the last good one when it does not load)."""
        now = time.monotonic()
        if now - self._checked >= self.check_s:
            self._checked = now
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._org = load_organisation(self.path)
                    _log.info("organisation file %s read again (version %s)", self.path, self._org.version or "-")
                except ConfigError as exc:
                    _log.error("organisation file %s changed but does not load; still routing by the previous "
                               "one: %s", self.path, str(exc).splitlines()[0])
        return self._org

    def reload(self) -> Organisation:
        """Look at the file now (after this process wrote it), whatever ``check_s`` says."""
        self._checked = float("-inf")
        return self.current()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)
