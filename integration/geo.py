"""WGS84 ↔ GCJ-02 (the datum of Gaode, Tencent and most Chinese base maps, "火星坐标").

Cameras are located in WGS84; a platform drawn on a GCJ-02 base map shows a WGS84 point a few hundred metres
off. The transform is the public GCJ-02 formula (as in eviltransform, whose values the tests check against to
1e-9 degrees); the PyPI packages that carry it are unmaintained (eviltransform 0.1.1, 2018; coord-convert
0.2.1, 2019), so these forty lines live here. Outside China the two datums coincide (the point is returned
unchanged). :func:`gcj02_to_wgs84` inverts it iteratively to under a millimetre.
"""

from __future__ import annotations

import math

__all__ = ["gcj02_to_wgs84", "in_china", "wgs84_to_gcj02"]

_A = 6378137.0  # Krasovsky 1940 semi-major axis used by the formula
_EE = 0.00669342162296594323


def in_china(lat: float, lon: float) -> bool:
    """The rough bounding box where GCJ-02 differs from WGS84."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def _transform(x: float, y: float) -> tuple[float, float]:
    xy, abs_x, x_pi, y_pi = x * y, math.sqrt(abs(x)), x * math.pi, y * math.pi
    d = 20.0 * math.sin(6.0 * x_pi) + 20.0 * math.sin(2.0 * x_pi)
    lat = d + 20.0 * math.sin(y_pi) + 40.0 * math.sin(y_pi / 3.0)
    lon = d + 20.0 * math.sin(x_pi) + 40.0 * math.sin(x_pi / 3.0)
    lat += 160.0 * math.sin(y_pi / 12.0) + 320 * math.sin(y_pi / 30.0)
    lon += 150.0 * math.sin(x_pi / 12.0) + 300.0 * math.sin(x_pi / 30.0)
    lat = lat * 2.0 / 3.0 - 100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * xy + 0.2 * abs_x
    lon = lon * 2.0 / 3.0 + 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * xy + 0.1 * abs_x
    return lat, lon


def _delta(lat: float, lon: float) -> tuple[float, float]:
    d_lat, d_lon = _transform(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return d_lat, d_lon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in GCJ-02 of a WGS84 point."""
    if not in_china(lat, lon):
        return lat, lon
    d_lat, d_lon = _delta(lat, lon)
    return lat + d_lat, lon + d_lon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in WGS84 of a GCJ-02 point (fixed-point iteration; error under 1e-9 degrees)."""
    if not in_china(lat, lon):
        return lat, lon
    w_lat, w_lon = lat, lon
    for _ in range(20):
        g_lat, g_lon = wgs84_to_gcj02(w_lat, w_lon)
        e_lat, e_lon = g_lat - lat, g_lon - lon
        w_lat, w_lon = w_lat - e_lat, w_lon - e_lon
        if abs(e_lat) < 1e-10 and abs(e_lon) < 1e-10:
            break
    return w_lat, w_lon
