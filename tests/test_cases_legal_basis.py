"""The legal-basis catalogue: shipped defaults with real citations, validation with file:line errors, the
discretion table, and the config field that points at the city's own copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nonsite.cases.legal_basis import DEFAULT_CATALOGUE, LegalBasisError, default_catalogue, load_catalogue
from nonsite.cli import main
from nonsite.config import load_config


def test_shipped_catalogue_cites_the_laws_for_the_three_types() -> None:
    cat = default_catalogue()
    assert {"sidewalk_parking", "street_vending", "stray_dog"} <= set(cat.types)
    cite = {pid: cat.provisions[pid].citation("zh") for pid in cat.provisions}
    parking = [cite[p] for p in cat.types["sidewalk_parking"].basis]
    assert parking == ["《中华人民共和国道路交通安全法》第五十六条", "《中华人民共和国道路交通安全法》第九十三条"]
    assert "禁止在人行道上停放机动车" in cat.provisions["rtsl-56"].summary.zh
    penalty = cat.types["sidewalk_parking"].penalty
    assert penalty is not None and (penalty.min_yuan, penalty.max_yuan) == (20, 200)
    vending = " ".join(cite[p] for p in cat.types["street_vending"].basis)
    assert "《城市市容和环境卫生管理条例》（国务院令第101号）第十四条" in vending
    assert "《城市道路管理条例》（国务院令第198号）第四十二条" in vending
    dogs = [cite[p] for p in cat.types["stray_dog"].basis]
    assert dogs[0] == "《中华人民共和国动物防疫法》（2021年修订）第三十条"
    assert "系犬绳" in cat.provisions["aepl-30"].summary.zh and "流浪犬" in cat.provisions["aepl-30"].summary.zh
    assert "上海市养犬管理条例" in cat.provisions["local-dogs"].law.zh
    assert cat.types["stray_dog"].penalty is None
    assert cat.provisions["apl-33"].citation("en").endswith("Art. 33(1)")


def test_shipped_catalogue_cites_the_city_appearance_articles_for_the_left_object_types() -> None:
    cat = default_catalogue()
    cite = {pid: cat.provisions[pid].citation("zh") for pid in cat.provisions}
    law = "《城市市容和环境卫生管理条例》（国务院令第101号）"
    assert [cite[p] for p in cat.types["piled_materials"].basis] == [f"{law}第十四条", f"{law}第三十六条第（二）项"]
    drying = [cite[p] for p in cat.types["street_drying"].basis]
    assert drying[:2] == [f"{law}第十条", f"{law}第三十四条"]
    assert "阳台和窗外" in cat.provisions["cacsr-10"].summary.zh
    posting = [cite[p] for p in cat.types["illegal_posting"].basis]
    assert posting[:2] == [f"{law}第十七条", f"{law}第十一条"]
    assert "张挂、张贴宣传品" in cat.provisions["cacsr-17"].summary.zh
    # 店外经营 has no national article: only the local regulation, its article left for the legal office
    shop = cat.types["outside_shop"]
    assert shop.basis == ["local-shopfront"] and cat.provisions["local-shopfront"].article is None
    note = cat.provisions["local-shopfront"].note
    assert note is not None and "No national article" in note.en
    for t in ("piled_materials", "street_drying", "illegal_posting", "outside_shop"):
        assert [r.disposition for r in cat.types[t].discretion] == ["warning", "penalty"], t


def test_every_entry_awaits_the_legal_office_and_unsure_articles_say_so() -> None:
    cat = default_catalogue()
    for pid, p in cat.provisions.items():
        assert p.confirmed_by_legal_office is False, pid
        assert p.summary.zh and p.summary.en, pid
        if p.article is None:  # we did not cite what we could not confirm, and say so
            assert p.note is not None and "NOT filled in" in p.note.en and "未填写" in p.note.zh, pid
    for t in cat.types.values():
        assert all(rule.confirmed_by_legal_office is False for rule in t.discretion)
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    assert "NOTHING here is confirmed by a legal office" in text


@pytest.mark.parametrize(("type_", "repeats", "plate", "expected", "rule"), [
    ("sidewalk_parking", 0, True, "warning", "first-offence-warning"),
    ("sidewalk_parking", 2, True, "penalty", "repeat-penalty"),
    ("street_vending", 0, False, "warning", "first-offence-warning"),
    ("street_vending", 1, False, "penalty", "repeat-penalty"),
    ("stray_dog", 0, False, "dispatch", "capture-team"),
    ("stray_dog", 5, False, "dispatch", "capture-team"),
    ("double_parking", 0, True, "manual", None),
])
def test_discretion_table(type_: str, repeats: int, plate: bool, expected: str, rule: str | None) -> None:
    s = default_catalogue().suggest(type_, repeats, plate_read=plate)
    assert (s.disposition, s.rule) == (expected, rule)
    if expected == "dispatch":
        assert s.dispatch_to is not None and "收容" in s.dispatch_to.zh
    if expected == "warning":
        assert "apl-33" in s.basis  # 首违不罚 rests on the Administrative Penalty Law


def _broken(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "legal_basis.yaml"
    path.write_text(text.replace(old, new, count), encoding="utf-8")
    return path


def _line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


@pytest.mark.parametrize(("old", "new", "needle", "message"), [
    ("    role: prohibition\n", "    role: forbidden\n", "role: forbidden",
     r"provisions\.rtsl-56\.role: Input should be 'prohibition'"),
    ("    basis: [rtsl-56, rtsl-93]\n", "    basis: [rtsl-56, rtsl-999]\n", "rtsl-999",
     r"types\.sidewalk_parking\.basis: unknown provision id 'rtsl-999'; define it under provisions:"),
    ("      min_yuan: 20\n", "      min_yuan: 500\n", "min_yuan: 500",
     r"types\.sidewalk_parking\.penalty: min_yuan 500 is above max_yuan 200; swap them"),
    ("        disposition: dispatch\n", "        disposition: dispatch\n        colour: red\n", "colour: red",
     r"types\.stray_dog\.discretion\[0\]\.colour: unknown key"),
    ("      window_days: 90\n", "      window_days: 0\n", "window_days: 0",
     r"types\.sidewalk_parking\.repeat\.window_days: Input should be greater than or equal to 1"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, needle: str, message: str) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(LegalBasisError) as err:
        load_catalogue(path)
    first = str(err.value).splitlines()[0]
    line = _line_of(path, needle)
    # The key's own line, or the line of the mapping that holds it.
    assert re.match(rf"{re.escape(str(path))}:(\d+): {message}", first), first
    assert int(first.split(":")[1]) <= line


def test_a_dispatch_rule_needs_a_team(tmp_path: Path) -> None:
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    start = text.index("        dispatch_to:\n")
    end = text.index("        basis: [aepl-30]\n")
    path = tmp_path / "c.yaml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    with pytest.raises(LegalBasisError,
                       match=r"c\.yaml:\d+: types\.stray_dog\.discretion\[0\]: a dispatch rule needs dispatch_to"):
        load_catalogue(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(LegalBasisError, match="legal-basis catalogue not found"):
        load_catalogue(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\ntypes: [\n", encoding="utf-8")
    with pytest.raises(LegalBasisError, match=r"bad\.yaml:3: not valid YAML"):
        load_catalogue(bad)


def test_the_config_points_at_the_citys_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    city = _broken(tmp_path, "      window_days: 90\n", "      window_days: 30\n")
    (tmp_path / "nonsite.yaml").write_text("cases:\n  legal_basis: legal_basis.yaml\n", encoding="utf-8")
    cfg = load_config(tmp_path / "nonsite.yaml")
    assert cfg.cases.legal_basis == str(city)
    assert load_catalogue(cfg.cases.legal_basis).types["sidewalk_parking"].repeat.window_days == 30
    assert main(["config", "check", str(tmp_path / "nonsite.yaml")]) == 0
    city.write_text(city.read_text(encoding="utf-8").replace("role: duty", "role: chore"), encoding="utf-8")
    assert main(["config", "check", str(tmp_path / "nonsite.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{city}:" in err and "provisions.aepl-30.role" in err and "Traceback" not in err
