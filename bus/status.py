"""``nonsite bus status``: the topics, each consumer group's lag and this node's outbox depth."""

from __future__ import annotations

from pathlib import Path

from nonsite.bus.events import TOPIC_EVIDENCE, TOPIC_VIOLATIONS
from nonsite.config import NonsiteConfig

GROUPS = ((TOPIC_VIOLATIONS, "nonsite-sealer"), (TOPIC_EVIDENCE, "nonsite-drafter"))


def bus_status(cfg: NonsiteConfig, data_dir: Path) -> int:
    """Print one line per topic and per consumer group; 0 when the bus answers, 2 when it does not."""
    if cfg.bus.kind == "embedded":
        from nonsite.bus.embedded import EmbeddedBus

        path = data_dir / "bus" / "bus.sqlite"
        if not path.is_file():
            print(f"embedded bus: no log at {path} yet")
            return 0
        ebus = EmbeddedBus(path)
        try:
            print(f"embedded bus: {path}")
            for topic, group in GROUPS:
                print(f"  {topic}: {ebus.end_offset(topic)} message(s); group {group} lag {ebus.lag(topic, group)}")
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
        for topic, group in GROUPS:
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
