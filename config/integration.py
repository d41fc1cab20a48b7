"""The ``integration:`` section: the city platform hand-off (数字城管 / 城运平台) and the team notifications.

Secrets never appear in the file: the HMAC secrets, the webhook URLs (they carry the robot's key) and the SMS
gateway's credential are read from the environment variables named here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from nonsite.config.base import Section

#: The workflow actions a platform status may map to (the names of ``nonsite.cases.workflow.Action``).
WORKFLOW_ACTIONS: tuple[str, ...] = ("confirm", "approve", "return", "dismiss", "dispatch", "rectify", "close")
#: Case statuses (``nonsite.cases.db.CaseStatus``; the config package cannot import cases).
CASE_STATUSES: tuple[str, ...] = ("draft", "confirmed", "approved", "returned", "dismissed", "dispatched", "rectified",
                                  "closed")
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"
_HEADER = r"^[A-Za-z0-9-]{1,64}$"


class StatusMapping(Section):
    """What one status reported by the platform does to our case."""

    action: str | None = Field(
        None, description="Workflow action to apply (confirm, approve, return, dismiss, dispatch, rectify, close); "
        "empty: record it in the audit trail only.",
    )
    note: str = Field("", description="Note written with the action when the platform sent no comment.")
    reason: str | None = Field(None, description="Dismiss reason, when action is dismiss (e.g. not_a_violation).")

    @field_validator("action")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in WORKFLOW_ACTIONS:
            raise ValueError(f"unknown workflow action '{v}'; use one of {', '.join(WORKFLOW_ACTIONS)} or leave it out")
        return v


def _default_status_map() -> dict[str, StatusMapping]:
    return {
        "accepted": StatusMapping(note="城运平台已受理"),
        "dispatched": StatusMapping(note="城运平台已派遣"),
        "closed": StatusMapping(action="close", note="城运平台已结案"),
        "returned": StatusMapping(note="城运平台退回"),
    }


def _default_event_codes() -> dict[str, str]:
    # Example codes in the shape of GB/T 30428.2 事件 classes (大类 05 街面秩序 ...); every city's platform has
    # its own code table: replace them with the codes your platform's integration document lists.
    return {"sidewalk_parking": "0505", "street_vending": "0501", "stray_dog": "0113", "outside_shop": "0502",
            "piled_materials": "0506", "street_drying": "0507", "illegal_posting": "0508",
            "mobile_hawker": "0504"}


class CallbackFields(Section):
    """Where the platform's status callback (JSON) puts each value (dotted paths, e.g. data.caseNo)."""

    event_id: str = Field("event_id", description="The platform's unique id of this status change (deduplication).")
    case_number: str = Field("case_number", description="Our case number, as we sent it.")
    status: str = Field("status", description="The new status on the platform (a key of status_map).")
    comment: str = Field("comment", description="The platform operator's comment (optional in the callback).")
    at: str = Field("at", description="When it changed on the platform (ISO 8601, optional).")


class PlatformConfig(Section):
    """Push cases to the city platform and take its status changes back."""

    enabled: bool = Field(False, description="Push cases to the city platform.")
    name: str = Field("city", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
                      description="Short id of the platform (outbox rows, audit actor platform:<name>).")
    url: str | None = Field(None, description="HTTP(S) URL the case reports are POSTed to; ${VAR} allowed.")
    template: str = Field(
        "chengyun",
        description="Mapping of a case onto the platform's JSON: a built-in template name (chengyun) or the path of "
        "a Jinja2 file (sandboxed; case values are data, never expanded).",
    )
    secret_env: str = Field("NONSITE_PLATFORM_SECRET", pattern=_ENV,
                            description="Environment variable holding the HMAC-SHA256 secret of outbound reports.")
    callback_secret_env: str = Field(
        "NONSITE_PLATFORM_CALLBACK_SECRET", pattern=_ENV,
        description="Environment variable holding the HMAC-SHA256 secret the platform signs its callbacks with.",
    )
    signature_header: str = Field("X-Nonsite-Signature", pattern=_HEADER,
                                  description="Header carrying sha256=<hex HMAC of timestamp, newline, body>.")
    timestamp_header: str = Field("X-Nonsite-Timestamp", pattern=_HEADER,
                                  description="Header carrying the signing time (Unix seconds).")
    idempotency_header: str = Field("Idempotency-Key", pattern=_HEADER,
                                    description="Header carrying <case number>:<revision>.")
    max_skew_s: int = Field(300, ge=10, le=3600,
                            description="Callbacks signed further than this from our clock are refused (replays).")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Connect and read timeout of one POST.")
    max_attempts: int = Field(12, ge=1, le=100,
                              description="Attempts before a report goes to the dead-letter list (admins requeue it).")
    backoff_base_s: float = Field(5.0, gt=0, description="Wait after the first failure; doubles each attempt.")
    backoff_max_s: float = Field(3600.0, gt=0, description="Longest wait between two attempts.")
    link_expiry_s: int = Field(3 * 24 * 3600, ge=60, le=7 * 24 * 3600,
                               description="Lifetime of the evidence image links sent to the platform "
                               "(S3 allows 7 days).")
    coordinates: Literal["gcj02", "wgs84"] = Field(
        "gcj02", description="Datum of the coordinates the platform expects (Gaode/Tencent base maps: gcj02).")
    event_codes: dict[str, str] = Field(
        default_factory=_default_event_codes,
        description="事件类型编码 per violation type (from the platform's code table); a type without a code is not "
        "pushed (dead-letter, with the reason).",
    )
    status_map: dict[str, StatusMapping] = Field(
        default_factory=_default_status_map,
        description="Platform status (accepted, dispatched, closed, returned, ...) → workflow action and note.",
    )
    callback_fields: CallbackFields = Field(default_factory=CallbackFields,
                                            description="Where the values are in the platform's callback JSON.")
    response_code_field: str | None = Field(
        None, description="For a platform that answers HTTP 200 with a business code in its JSON (e.g. code): the "
        "dotted path of that code; unset: the HTTP status alone decides.")
    response_ok_codes: list[str] = Field(default_factory=lambda: ["0", "200"],
                                         description="Codes at response_code_field that mean accepted.")
    response_duplicate_codes: list[str] = Field(
        default_factory=list, description="Codes that mean the platform already has this report (delivered).")
    push_on: list[str] = Field(
        default_factory=lambda: ["approved"],
        description="Case statuses that send a report (a revision) to the platform: approved (立案, for dispatch), "
        "add dispatched, rectified, closed to keep the platform's copy current.",
    )
    link_base_url: str = Field(
        "", description="Public base URL of the console, for evidence links when the store cannot presign (local "
        "store): <link_base_url>/platform/evidence/<key>?exp=&sig=.")
    link_secret_env: str = Field("NONSITE_EVIDENCE_LINK_SECRET", pattern=_ENV,
                                 description="Environment variable holding the HMAC secret of those links.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the hand-off outbox; default sqlite:///DATA_DIR/integration.db.")

    @model_validator(mode="after")
    def _complete(self) -> PlatformConfig:
        if self.enabled and not self.url:
            raise ValueError("the platform is enabled but has no url; set integration.platform.url")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, not {self.url[:16]!r}")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s")
        return self

    @field_validator("push_on")
    @classmethod
    def _statuses(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in CASE_STATUSES]
        if unknown:
            raise ValueError(f"unknown case status '{unknown[0]}'; use {', '.join(CASE_STATUSES)}")
        return v


NoticeKind = Literal["new_alert", "supervision", "overdue", "reminder"]
_ALL_KINDS: list[NoticeKind] = ["new_alert", "supervision", "overdue", "reminder"]


class ChannelConfig(Section):
    """One notification channel: a WeCom or DingTalk group robot, or an SMS gateway."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Channel id (logs, metrics).")
    kind: Literal["wecom", "dingtalk", "sms"] = Field(
        description="wecom (企业微信群机器人), dingtalk (钉钉群机器人) or sms (an HTTP SMS gateway).")
    url_env: str = Field(pattern=_ENV, description="Environment variable holding the webhook / gateway URL (it "
                         "carries the robot's key: never written in the file, masked in logs).")
    secret_env: str | None = Field(None, pattern=_ENV,
                                   description="dingtalk: environment variable holding the robot's signing secret "
                                   "(加签, SEC...); leave out for a robot without signing.")
    events: list[NoticeKind] = Field(default_factory=lambda: list(_ALL_KINDS),
                                     description="Which notices go to this channel.")
    format: Literal["markdown", "text"] = Field("markdown", description="wecom/dingtalk message type.")
    mention_mobiles: list[str] = Field(default_factory=list,
                                       description="wecom/dingtalk: mobile numbers to @ (text messages).")
    phones: list[str] = Field(default_factory=list, description="sms: recipients' mobile numbers.")
    auth_header: str = Field("Authorization", pattern=_HEADER, description="sms: header carrying the credential.")
    auth_env: str | None = Field(None, pattern=_ENV,
                                 description="sms: environment variable holding the header's value (e.g. Bearer ...).")
    body_template: str = Field(
        '{"phones": {{ phones | json }}, "content": {{ text | json }}}',
        description="sms: Jinja2 (sandboxed) template of the JSON body; variables phones (list) and text.",
    )
    max_chars: int = Field(0, ge=0, description="Longest message text, below the channel's own limit (wecom markdown "
                           "4096 / text 2048 bytes, dingtalk 5000 characters, sms 300 characters); 0: that limit.")
    rate_per_minute: int = Field(20, ge=1, le=600,
                                 description="Most messages a minute (wecom and dingtalk robots allow 20).")
    console_url: str = Field("", description="Base URL of the console for case links in messages (empty: no links).")

    @model_validator(mode="after")
    def _kind_fields(self) -> ChannelConfig:
        if self.kind == "sms" and not self.phones:
            raise ValueError(f"sms channel '{self.id}' needs phones (the recipients' mobile numbers)")
        if self.kind != "dingtalk" and self.secret_env:
            raise ValueError("secret_env is DingTalk's signing secret; other channels take auth_env")
        return self


class NotificationsConfig(Section):
    """New alerts, 督办 and overdue cases to the teams' group chats and phones."""

    enabled: bool = Field(False, description="Send notifications.")
    window_s: float = Field(10.0, ge=0, le=3600,
                            description="Notices arriving within this many seconds go out as one message.")
    max_items: int = Field(20, ge=1, le=200, description="Most notices listed in one message (more: several messages).")
    max_attempts: int = Field(5, ge=1, le=50, description="Tries of one message before it is given up (logged).")
    backoff_base_s: float = Field(2.0, gt=0, description="Wait after a failed send; doubles each attempt.")
    backoff_max_s: float = Field(300.0, gt=0, description="Longest wait between two tries.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of one send.")
    poll_s: float = Field(5.0, gt=0, le=600,
                          description="Seconds between two checks of the case database for new alerts and 督办 (by "
                          "the process serving the console: `nonsite run`, or the distributed console role).")
    channels: list[ChannelConfig] = Field(default_factory=list, description="Where notices go.")

    @model_validator(mode="after")
    def _unique(self) -> NotificationsConfig:
        ids = [c.id for c in self.channels]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"channel id '{dup[0]}' appears twice; channel ids must be unique")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s")
        return self


class IntegrationConfig(Section):
    """Outside the office: the city platform and the teams' notification channels."""

    platform: PlatformConfig = Field(default_factory=PlatformConfig, description="City platform hand-off (数字城管 / "
                                     "城运平台): outbound case reports, inbound status callbacks.")
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig,
                                               description="WeCom / DingTalk group robots and SMS.")
