"""Evidence, bus, cases and console sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nonsite.config.base import Section


class EvidenceConfig(Section):
    store: Literal["local"] = Field("local", description="Evidence store: local (a directory under data_dir).")
    path: str | None = Field(None, description="Directory of the local store; default DATA_DIR/evidence.")
    pre_roll_s: float = Field(3.0, ge=0, le=60, description="Seconds of video kept before the violation onset.")
    post_roll_s: float = Field(2.0, ge=0, le=60, description="Seconds of video recorded after confirmation.")
    max_clip_s: float = Field(
        120.0, gt=0, description="Longest clip written; a longer episode keeps its start and end."
    )
    jpeg_quality: int = Field(92, ge=50, le=100, description="JPEG quality of stills.")
    min_still_gap_s: float = Field(
        10.0, ge=0, le=600,
        description="Two-stage evidence (GA/T 832): a further overview still (role overview_2) is taken this "
        "many seconds after the onset still while the object stays, so two overview stills of a standing "
        "object lie at least this far apart; when the dwell is shorter, publishing waits for it (or for the "
        "object to leave). 0 switches it off.",
    )
    signing_key: str | None = Field(
        None,
        description="Ed25519 private key file (PEM) that signs manifests; default DATA_DIR/keys/signing.pem, "
        "created on first use.",
    )


class BusConfig(Section):
    kind: Literal["embedded"] = Field("embedded", description="embedded: a durable log in DATA_DIR/bus.")


class CasesConfig(Section):
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the case database; default sqlite:///DATA_DIR/cases.db."
    )
    number_prefix: str = Field("NS", pattern=r"^[A-Z0-9-]{1,12}$", description="Prefix of case numbers.")
    legal_basis: str | None = Field(
        None,
        description="The city's legal-basis catalogue (YAML: provisions, penalties, discretion table per violation "
        "type); default: the shipped cases/legal_basis.yaml. Relative paths are relative to the config file.",
    )
    document_font: str | None = Field(
        None,
        description="TrueType font with Chinese glyphs embedded in case PDFs; default: the Debian package "
        "fonts-wqy-zenhei. Relative paths are relative to the config file.",
    )


class ConsoleConfig(Section):
    host: str = Field("127.0.0.1", description="Address the console listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the console (0 picks a free one).")
    language: Literal["zh", "en"] = Field("zh", description="Default console language.")
