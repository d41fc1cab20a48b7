"""The case document: a PDF of a real case (real frames packaged and sealed by nonsite.evidence) rendered to an
image with poppler, its text layer holding the Chinese legal text in an embedded CJK font; the HTML view."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from cases_support import DOG_IMAGE, real_sealed, video_frame
from reportlab.pdfbase.ttfonts import TTFont
from sqlalchemy.orm import Session, sessionmaker
from test_cases_repeats import T0

from nonsite.cases import Case, Role, approve, confirm, draft_case, open_db
from nonsite.cases import document as document_mod
from nonsite.cases.document import FontMissing, find_cjk_font, render_case_html, render_case_pdf
from nonsite.cases.queries import audit_trail
from nonsite.cli import main
from nonsite.evidence import LocalStore
from nonsite.evidence.signing import Signer
from nonsite.evidence.verify import verify_package


@dataclass
class Filed:
    data: Path
    sf: sessionmaker[Session]
    store: LocalStore
    public_key: bytes
    parking: Case
    dog: Case

    def audit(self, case: Case) -> list:  # type: ignore[type-arg]
        with self.sf() as s:
            return audit_trail(s, case)

    def verify(self, case: Case) -> object:
        return verify_package(self.store, case.event_id, self.public_key)


@pytest.fixture()
def filed(tmp_path: Path, media_dir: Path) -> Iterator[Filed]:
    """A node's data folder with real sealed packages and their cases: a repeat sidewalk parking (plate read,
    confirmed and approved) and a stray dog."""
    data = tmp_path / "data"
    store = LocalStore(data / "evidence")
    signer = Signer.load_or_create(data / "keys" / "signing.pem")
    sf = open_db(f"sqlite:///{data / 'cases.db'}")
    frame = video_frame(media_dir)
    earlier = real_sealed(store, signer, media_dir, type_="sidewalk_parking", frame=frame, plate="沪A12345",
                          confirmed_at=T0 - timedelta(days=3), camera_name="南京东路<b>东口</b>")
    draft_case(sf, earlier, "SH")
    parking, _ = draft_case(sf, real_sealed(store, signer, media_dir, type_="sidewalk_parking", frame=frame,
                                            plate="沪A·12345", camera_name="南京东路<b>东口</b>"), "SH")
    confirm(sf, parking.id, "li.ming", role=Role.OPERATOR)
    parking = approve(sf, parking.id, "wang.fang", note="证据充分", role=Role.REVIEWER)
    dog, _ = draft_case(sf, real_sealed(store, signer, media_dir, type_="stray_dog", image=DOG_IMAGE), "SH")
    yield Filed(data, sf, store, signer.public_key_pem().encode(), parking, dog)
    sf.kw["bind"].dispose()


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout


def _glyphs() -> set[int]:
    path, regular, mono = find_cjk_font()
    cmap: set[int] = set()
    for index in {regular, mono if mono is not None else regular}:
        cmap |= set(TTFont(f"probe{index}", str(path), subfontIndex=index).face.charToGlyph)
    return cmap


def test_pdf_shows_the_chinese_legal_text_in_an_embedded_font(filed: Filed, tmp_path: Path) -> None:
    case = filed.parking
    pdf = render_case_pdf(case, filed.store, "zh", verification=filed.verify, audit=filed.audit(case))
    assert pdf.startswith(b"%PDF-")
    path = tmp_path / "case.pdf"
    path.write_bytes(pdf)

    # First page to an image: a real page, not blank.
    _run("pdftoppm", "-f", "1", "-l", "1", "-r", "80", "-png", str(path), str(tmp_path / "page"))
    png = next(tmp_path.glob("page*.png"))
    page = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert page is not None and page.shape[0] > 800
    ink = float(np.mean(page < 200))
    assert 0.03 < ink < 0.6, f"page 1 looks blank or black ({ink:.3f} dark)"

    text = _run("pdftotext", "-layout", str(path), "-")
    flat = re.sub(r"\s+", "", text)
    for expected in ("非现场执法案件卷宗", case.number, "《中华人民共和国道路交通安全法》第五十六条",
                     "禁止在人行道上停放机动车", "第九十三条", "二十元以上二百元以下罚款", "待法制部门确认",
                     "车牌沪A·12345", "立案处罚",
                     "90天内同车牌已有1起", "2026-11-2119:03:12(UTC+08:00)", "南京东路<b>东口</b>",
                     "校验通过", case.manifest_sha256, "法制审核通过", "证据充分", "wang.fang"):
        assert expected.replace(" ", "") in flat, expected
    # Every character of the text layer has a glyph in the embedded font: nothing renders as a box.
    glyphs = _glyphs()
    missing = {ch for ch in text if not ch.isspace() and ord(ch) not in glyphs}
    assert not missing, f"characters without a glyph: {sorted(missing)}"
    fonts = _run("pdffonts", str(path))
    cjk = [line for line in fonts.splitlines() if "WenQuanYi" in line]
    assert cjk and all(" yes yes yes " in line for line in cjk), fonts
    images = _run("pdfimages", "-list", str(path)).splitlines()[2:]
    assert len(images) >= 3  # onset, confirm (annotated) and the close-up


def test_pdf_in_english_and_for_a_dispatch_task(filed: Filed, tmp_path: Path) -> None:
    pdf = render_case_pdf(filed.parking, filed.store, "en", verification=filed.verify)
    (tmp_path / "en.pdf").write_bytes(pdf)
    flat = re.sub(r"\s+", " ", _run("pdftotext", str(tmp_path / "en.pdf"), "-"))
    for expected in ("Non-site enforcement case file", "Road Traffic Safety Law of the People's Republic of China, "
                     "Art. 56", "Penalty case", "Verified: the signature is valid",
                     "to be confirmed by the legal office"):
        assert expected in flat, expected
    dog = render_case_pdf(filed.dog, filed.store, "zh")
    (tmp_path / "dog.pdf").write_bytes(dog)
    flat = re.sub(r"\s+", "", _run("pdftotext", str(tmp_path / "dog.pdf"), "-"))
    for expected in ("流浪犬", "《中华人民共和国动物防疫法》（2021年修订）第三十条", "派单处置", "街道流浪犬收容处置队",
                     "不适用罚款", "未校验"):
        assert expected in flat, expected


def test_html_view_is_escaped_and_shows_seal_and_stills(filed: Filed) -> None:
    case = filed.parking
    html = render_case_html(case, "zh", verification=filed.verify, audit=filed.audit(case), store=filed.store)
    assert html.startswith("<!DOCTYPE html>") and '<html lang="zh-CN">' in html
    assert "南京东路&lt;b&gt;东口&lt;/b&gt;" in html and "<b>东口" not in html
    assert "《中华人民共和国道路交通安全法》第五十六条" in html and 'data-status="ok"' in html
    assert html.count('src="data:image/jpeg;base64,') == 3
    linked = render_case_html(case, "en", image_src=lambda role, key: f"/evidence/{case.event_id}/{role}.jpg")
    assert f'src="/evidence/{case.event_id}/onset_annotated.jpg"' in linked and 'data-status="unchecked"' in linked
    assert '<html lang="en">' in linked and "Parking on the sidewalk" in linked


def test_tampered_evidence_is_flagged(filed: Filed) -> None:
    case = filed.parking
    key = next(e["key"] for e in case.evidence if e["role"] == "confirm_annotated")
    original = filed.store.get(key)
    filed.store.put(key, original[:-200] + bytes(200), "image/jpeg")
    html = render_case_html(case, "en", verification=filed.verify, store=filed.store)
    assert 'data-status="failed"' in html and "Verification failed" in html
    assert "confirm_annotated.jpg" in html and "differs from the evidence list" in html

    def broken(_: Case) -> object:
        raise LookupError("no package")

    html = render_case_html(case, "zh", verification=broken)
    assert 'data-status="failed"' in html and "LookupError: no package" in html


def test_a_missing_font_says_what_to_install(filed: Filed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FontMissing, match="does not exist; fix the path"):
        render_case_pdf(filed.dog, filed.store, font_path=tmp_path / "nope.ttf")
    monkeypatch.setattr(document_mod, "CJK_FONT_CANDIDATES", (("/nonexistent/font.ttc", 0, None),))
    with pytest.raises(FontMissing, match="install the Debian package fonts-wqy-zenhei"):
        render_case_pdf(filed.dog, filed.store)


def test_document_command(filed: Filed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "file.pdf"
    assert main(["cases", "document", filed.parking.number, "--data-dir", str(filed.data), "--out", str(out)]) == 0
    assert "校验通过" in _run("pdftotext", str(out), "-")  # verified with the node's own public key
    html = tmp_path / "file.html"
    assert main(["cases", "document", filed.dog.number, "--data-dir", str(filed.data), "--out", str(html),
                 "--lang", "en"]) == 0
    assert "Stray dog" in html.read_text(encoding="utf-8")
    assert main(["cases", "document", "SH-2026-999999", "--data-dir", str(filed.data), "--out", str(out)]) == 2
    assert "no case SH-2026-999999" in capsys.readouterr().err
