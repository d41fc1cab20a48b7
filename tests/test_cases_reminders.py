"""Reminders before a deadline, escalations after it (to the leader, then the supervisors), never twice; and
supervision orders (督办): validation, answers, the deadline they set, pinned first in the task list."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bureau_support import SH, local

from nonsite.cases.deadlines import Due, TimeLimit, due_at
from nonsite.cases.reminders import (
    Notice,
    OpenStep,
    ReminderPolicy,
    Supervision,
    effective_due,
    notice_key,
    plan,
    task_sort_key,
)

DUE = Due(start=local(2026, 11, 12, 8), at=local(2026, 11, 12, 18))  # ten hours: marks at 13:00 and 16:00
STEP = OpenStep("NS-2026-000001", "rectify", DUE, team_id="yanshi-group-1", assignee="sun.hao", leader="li.qiang",
                team_people=("li.qiang", "sun.hao", "zhou.tao"))
POLICY = ReminderPolicy(supervisors=("du.cha",))


def run(now: datetime, sent: set[str], steps: list[OpenStep] | None = None) -> list[Notice]:
    """Plan, then 'send' (record the keys) like the caller does."""
    notices = plan(steps or [STEP], now, sent, POLICY)
    sent.update(n.key for n in notices)
    return notices


def test_reminders_at_the_marks_each_once() -> None:
    sent: set[str] = set()
    assert run(local(2026, 11, 12, 12, 59), sent) == []
    first = run(local(2026, 11, 12, 13), sent)
    assert [(n.kind, n.level, n.recipients) for n in first] == [("reminder", 1, ("sun.hao",))]
    assert first[0].since == local(2026, 11, 12, 13) and first[0].due_at == DUE.at
    assert run(local(2026, 11, 12, 13, 5), sent) == []  # the same reminder is not sent twice
    assert run(local(2026, 11, 12, 15, 59), sent) == []
    second = run(local(2026, 11, 12, 16), sent)
    assert [(n.kind, n.level) for n in second] == [("reminder", 2)]
    assert run(local(2026, 11, 12, 17, 59), sent) == []


def test_a_planner_that_was_down_sends_only_the_latest_mark() -> None:
    sent: set[str] = set()
    late = run(local(2026, 11, 12, 17), sent)
    assert [(n.kind, n.level) for n in late] == [("reminder", 2)]
    assert run(local(2026, 11, 12, 17, 30), sent) == []  # the skipped first mark is not sent late


def test_escalations_to_the_leader_then_the_supervisors() -> None:
    sent: set[str] = set()
    at_due = run(local(2026, 11, 12, 18), sent)
    assert [(n.kind, n.level, n.recipients, n.copy_to) for n in at_due] == [
        ("escalation", 1, ("li.qiang",), ("sun.hao",))
    ]
    assert run(local(2026, 11, 13, 17, 59), sent) == []
    day2 = run(local(2026, 11, 13, 18), sent)
    assert [(n.level, n.recipients) for n in day2] == [(2, ("li.qiang", "du.cha"))]
    assert run(local(2026, 11, 14, 9), sent) == []
    # Down for a week: one escalation, at the highest level.
    weeks = run(local(2026, 11, 20), sent)
    assert [n.level for n in weeks] == [3]
    assert run(local(2026, 12, 31), sent) == []  # max_escalations reached: no more
    assert len(sent) == 3


def test_who_is_told_without_an_assignee_or_a_leader() -> None:
    no_one = OpenStep("NS-2026-000002", "review", DUE, team_id="legal", team_people=("fa.zhi", "shen.he"))
    reminder = plan([no_one], local(2026, 11, 12, 13), set(), POLICY)
    assert reminder[0].recipients == ("fa.zhi", "shen.he")
    escalation = plan([no_one], local(2026, 11, 12, 19), set(), POLICY)
    assert (escalation[0].recipients, escalation[0].copy_to) == (("du.cha",), ())  # no leader: the supervisors


def test_many_cases_in_order_and_an_escalate_once_policy() -> None:
    other = OpenStep("NS-2026-000000", "confirm", Due(start=local(2026, 11, 12, 9), at=local(2026, 11, 12, 9, 30)),
                     assignee="chen.jing", leader="zhou.min")
    once = ReminderPolicy(remind_at=(0.8,), escalate_every=None)
    notices = plan([STEP, other], local(2026, 11, 12, 16), set(), once)
    assert [(n.case_number, n.kind) for n in notices] == [("NS-2026-000000", "escalation"),
                                                         ("NS-2026-000001", "reminder")]
    keys = {n.key for n in notices}
    assert plan([STEP, other], local(2026, 11, 30), keys, once) == [
        plan([STEP], local(2026, 11, 30), set(), once)[0]
    ]  # the other case escalated once and stays quiet; the first now escalates


def test_a_holiday_keeps_a_case_on_time_until_the_working_day_clock_runs_out() -> None:
    # Dispatched at 17:00 on the eve of National Day 2026 with one working day to rectify.
    due = due_at(local(2026, 9, 30, 17), TimeLimit(amount=1, unit="working_days"), SH)
    step = OpenStep("NS-2026-000100", "rectify", due, assignee="sun.hao", leader="li.qiang")
    sent: set[str] = set()
    assert run(local(2026, 10, 3, 12), sent, [step]) == []  # mid-holiday: not even half-time yet
    remind = run(local(2026, 10, 5), sent, [step])
    assert [n.kind for n in remind] == ["reminder"]
    assert run(local(2026, 10, 8, 23, 59), sent, [step])[0].level == 2  # the last minute of the working day
    overdue = run(local(2026, 10, 9), sent, [step])
    assert [(n.kind, n.recipients) for n in overdue] == [("escalation", ("li.qiang",))]


def test_a_supervision_order_sets_a_new_deadline_and_its_reminders_start_afresh() -> None:
    sent: set[str] = set()
    run(local(2026, 11, 12, 18), sent)  # escalated
    order = Supervision("NS-2026-000001", "今日下班前完成整改并上传照片", "du.cha", local(2026, 11, 12, 19),
                        new_deadline=local(2026, 11, 13, 19))
    due = effective_due(DUE, [order])
    assert due == Due(start=local(2026, 11, 12, 19), at=local(2026, 11, 13, 19))
    step = OpenStep(STEP.case_number, STEP.step, due, assignee="sun.hao", leader="li.qiang")  # type: ignore[arg-type]
    assert run(local(2026, 11, 13, 6), sent, [step]) == []
    fresh = run(local(2026, 11, 13, 7), sent, [step])  # half of the new 24 hours
    assert [(n.kind, n.level, n.due_at) for n in fresh] == [("reminder", 1, local(2026, 11, 13, 19))]
    answered = order.answered("已整改，照片已上传", "li.qiang", local(2026, 11, 13, 10))
    assert effective_due(DUE, [answered]) == DUE  # answered: the step's own deadline again
    assert effective_due(None, [Supervision("X", "核查", "du.cha", local(2026, 11, 13))]) is None


def test_supervision_orders_are_validated_and_answered_once() -> None:
    with pytest.raises(ValueError, match="needs an instruction"):
        Supervision("X", "  ", "du.cha", local(2026, 11, 12))
    with pytest.raises(ValueError, match="must be after it was issued"):
        Supervision("X", "整改", "du.cha", local(2026, 11, 12), new_deadline=local(2026, 11, 11))
    with pytest.raises(ValueError, match="timezone-aware"):
        Supervision("X", "整改", "du.cha", datetime(2026, 11, 12))
    with pytest.raises(ValueError, match="needs the answer, who answered and when"):
        Supervision("X", "整改", "du.cha", local(2026, 11, 12), answer="好")
    order = Supervision("X", "整改", "du.cha", local(2026, 11, 12))
    done = order.answered("已完成", "li.qiang", local(2026, 11, 12, 9))
    assert order.open and not done.open and done.answer == "已完成"
    with pytest.raises(ValueError, match="already answered"):
        done.answered("again", "li.qiang", local(2026, 11, 12, 10))
    with pytest.raises(ValueError, match="before it was issued"):
        order.answered("早", "li.qiang", local(2026, 11, 11))


def test_tasks_with_an_open_supervision_order_are_pinned_first() -> None:
    d = {n: Due(start=local(2026, 11, 1), at=local(2026, 11, day)) for n, day in
         (("A", 20), ("B", 14), ("C", 16), ("D", 18))}
    orders = {
        "C": [Supervision("C", "加快", "du.cha", local(2026, 11, 10), new_deadline=local(2026, 11, 25))],
        "D": [Supervision("D", "今日办结", "du.cha", local(2026, 11, 11), new_deadline=local(2026, 11, 12))],
        "A": [Supervision("A", "核实", "du.cha", local(2026, 11, 9)).answered("已核实", "li.qiang",
                                                                            local(2026, 11, 9, 12))],
    }
    tasks = ["A", "B", "C", "D", "E"]
    ordered = sorted(tasks, key=lambda n: task_sort_key(n, d.get(n), orders.get(n, [])))
    assert ordered == ["D", "C", "B", "A", "E"]  # open orders by their deadline; then by due; no due last


def test_keys_and_policies() -> None:
    assert notice_key("NS-1", "review", datetime(2026, 10, 8, 16, tzinfo=UTC), "reminder", 1) == \
        "NS-1|review|2026-10-08T16:00:00+00:00|reminder|1"
    with pytest.raises(ValueError, match="increasing fractions"):
        ReminderPolicy(remind_at=(0.8, 0.5))
    with pytest.raises(ValueError, match="increasing fractions"):
        ReminderPolicy(remind_at=(1.0,))
    with pytest.raises(ValueError, match="timezone-aware"):
        plan([STEP], datetime(2026, 11, 12, 13), set())
