"""``nonsite bus status``: the topics, each consumer group's lag and this node's outbox depth.

The groups: the sealer's and the drafter's (always); the city platform relay's (``nonsite-platform`` on
``nonsite.cases``) when ``integration.platform`` is enabled or the group has committed; and every camera re-check desk
(``nonsite-recheck-<tag>`` on ``nonsite.recheck``, one per edge / pool worker: its tag hashes host, data directory and
worker id, so they are found, not configured: on Kafka the broker's group list, on the embedded bus its commits).
The camera topics (``nonsite.cameras``, ``nonsite.camera-control``) are read in no group: their message counts show.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nonsite.bus.events import TOPIC_CASES, TOPIC_EVIDENCE, TOPIC_RECHECK, TOPIC_VIOLATIONS
from nonsite.config import NonsiteConfig

GROUPS = ((TOPIC_VIOLATIONS, "nonsite-sealer"), (TOPIC_EVIDENCE, "nonsite-drafter"))
PLATFORM_GROUP = "nonsite-platform"
"""The platform relay's group (:data:`nonsite.integration.relay.PLATFORM_GROUP`)."""
RECHECK_PREFIX = "nonsite-recheck-"
"""How every re-check desk's group starts (:func:`nonsite.pipeline.recheck.default_group`)."""


def groups_of(cfg: NonsiteConfig, known: Iterable[str] | None) -> list[tuple[str, str]]:
    """(topic, group) pairs to report: the fixed ones, the platform relay's when enabled or ``known``, and the
    re-check desks among ``known`` (the groups the bus knows; None when it could not say)."""
    found = set(known or ())
    out = list(GROUPS)
    if cfg.integration.platform.enabled or PLATFORM_GROUP in found:
        out.append((TOPIC_CASES, PLATFORM_GROUP))
    out += [(TOPIC_RECHECK, g) for g in sorted(found) if g.startswith(RECHECK_PREFIX)]
    return out


def _group_ids(admin: Any) -> list[str] | None:
    """The consumer groups the broker knows (None when it does not answer the question)."""
    lister = getattr(admin, "list_groups", None) or getattr(admin, "list_consumer_groups", None)
    if lister is None:
        return None
    try:
        rows = lister()
    except Exception:  # an old broker or one without ListGroups: the fixed groups still show
        return None
    out = []
    for row in rows:
        gid = row.get("group_id") if isinstance(row, dict) else (row[0] if isinstance(row, tuple | list) else None)
        if isinstance(gid, str):
            out.append(gid)
    return out


def bus_status(cfg: NonsiteConfig, data_dir: Path) -> int:
    """Print one line per topic and per consumer group; 0 when the bus answers, 2 when it does not."""
    if cfg.bus.kind == "embedded":
        from nonsite.bus.embedded import EmbeddedBus

        path = data_dir / "bus" / "bus.sqlite"
        if not path.is_file():
            print(f"embedded bus: no log at {path} yet")
            return 0
        from nonsite.bus.kafka import TOPICS

        ebus = EmbeddedBus(path)
        try:
            print(f"embedded bus: {path}")
            for topic in TOPICS:
                print(f"  {topic}: {ebus.end_offset(topic)} message(s)")
            known = [g for (g,) in ebus._conn().execute("SELECT DISTINCT grp FROM commits")]
            for topic, group in groups_of(cfg, known):
                print(f"  group {group} on {topic}: lag {ebus.lag(topic, group)}")
        finally:
            ebus.close()
        return 0

    import sqlite3

    from kafka.errors import KafkaError

    from nonsite.bus import _under
    from nonsite.bus.kafka import KafkaOffsets, admin_client, topic_specs

    k = cfg.bus.kafka
    client_id = f"{k.client_id}-status"
    try:
        admin = admin_client(k, client_id)
    except KafkaError as e:
        print(f"kafka {k.bootstrap_servers}: unreachable ({type(e).__name__}: {e})")
        return 2
    offsets = KafkaOffsets(k, client_id)
    try:
        existing = set(admin.list_topics())
        print(f"kafka {k.bootstrap_servers}:")
        for topic in topic_specs(k):
            if topic not in existing:
                print(f"  {topic}: missing (created by the first nonsite process that starts)")
                continue
            ends = offsets.end_offsets(topic)
            print(f"  {topic}: {len(ends)} partition(s), {sum(ends.values())} message(s)")
        known = _group_ids(admin)
        if known is None:
            print("  (the broker does not list its consumer groups: re-check desks not shown)")
        for topic, group in groups_of(cfg, known):
            if topic in existing:
                print(f"  group {group} on {topic}: lag {offsets.lag(topic, group)}")
    finally:
        admin.close()
        offsets.close()
    outbox_dir = _under(data_dir, k.outbox_path) if k.outbox_path else data_dir / "bus"
    for f in sorted(outbox_dir.glob("outbox-*.sqlite")) if outbox_dir.is_dir() else []:
        conn = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        try:
            (n,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.Error as e:
            print(f"  outbox {f}: unreadable ({e})")
            continue
        finally:
            conn.close()
        print(f"  outbox {f}: {n} message(s) waiting for the broker")
    return 0
