"""Licence-plate reading: the format matcher on strings, and the OCR reader on real vehicle crops.

The shared media hold no Chinese plate. What is tested on real pixels:
- negatives: vehicles whose plate is not visible or not readable (side views, a blurred US plate, far
  cars in CCTV frames, a bus covered in text) -> no reading;
- real Indian plates, which the OCR reads: rejected under the default (mainland) formats, and read
  exactly when an Indian format is configured (the configured formats decide, nothing else);
- Chinese plates rendered synthetically (Noto Sans CJK, from Debian's fonts-noto-cjk) and warped onto
  the real plate of a real car photo, blurred and JPEG-compressed: read exactly. The same plates
  pasted at 44x19 pixels onto another car cannot be read, and must give no reading rather than a guess.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError

from nonsite.config.plates import PlateFormat, PlatesConfig, mainland_formats
from nonsite.models.plates import (
    PlateReader,
    PlateReaderError,
    compile_formats,
    get_reader,
    match_format,
    normalise,
    read_plate,
)

CJK_FONTS = [
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
]
MAINLAND = compile_formats(PlatesConfig())
INDIA = PlateFormat(name="india", pattern=r"[A-Z]{2}[0-9]{1,2}[A-Z]{1,3}[0-9]{4}", description="Indian plates")

# Real vehicles (boxes from yolo11n-coco on these images) and where their real plate is.
THELA = "india_road_thela_animal/images"
HONDA = (f"{THELA}/val/img_125.jpg", (463, 314, 778, 514))  # front plate RJ14 CD 1295
PICKUP = (f"{THELA}/val/img_028.jpg", (0, 79, 534, 584))  # front plates RJ14GH3783 (two on the bumper)
RICKSHAW = (f"{THELA}/train_dog_subset/img_132.jpg", (1, 0, 371, 555))  # two-row plate MH12AU / 2433
# The Honda's plate as the OCR finds it (image pixels), corners clockwise from top-left.
HONDA_PLATE_QUAD = np.float32([[518, 445], [591, 451], [590, 472], [517, 467]])
CITY = "street_pedestrians_city.jpg"
HYUNDAI_REAR = (3473, 2525, 3764, 2732)  # rear view; its US plate (3646..3690, 2619..2638) is a blur
CITY_NEGATIVES = [
    (0, 2631, 1178, 3136),  # white SUV, side view
    (3366, 2646, 4705, 3078),  # white Prius, side view
    HYUNDAI_REAR,
    (1831, 2538, 2083, 2820),  # dark sedan, rear, plate hidden by a pedestrian
    (5126, 2876, 5386, 3134),  # motion-blurred car at the edge
    (2644, 2417, 2799, 2551),  # yellow cab far down the street
]


# ------------------------------------------------------------------------------------------ strings


@pytest.mark.parametrize(
    ("text", "plate", "fmt"),
    [
        ("京A12345", "京A12345", "standard"),
        ("京A·12345", "京A12345", "standard"),
        (" 京a 123 45 ", "京A12345", "standard"),
        ("京Ａ１２３４５", "京A12345", "standard"),  # full-width, as some OCR output it
        ("沪B-F7K29", "沪BF7K29", "standard"),
        ("粤B.8P2L6", "粤B8P2L6", "standard"),
        ("粤BD12345", "粤BD12345", "new_energy_small"),  # battery electric, small
        ("粤B·FA1234", "粤BFA1234", "new_energy_small"),  # hybrid, small; a letter in the 4th place
        ("京AK12345", "京AK12345", "new_energy_small"),  # 2021 extension letters A-K
        ("沪A12345D", "沪A12345D", "new_energy_large"),
        ("湘C56789F", "湘C56789F", "new_energy_large"),
        ("京A1234学", "京A1234学", "coach"),
        ("京A2468警", "京A2468警", "police"),
        ("冀B1234挂", "冀B1234挂", "trailer"),
        ("粤Z1234港", "粤Z1234港", "hong_kong_macau"),
        ("粤Z·A234澳", "粤ZA234澳", "hong_kong_macau"),
        ("沪A1234领", "沪A1234领", "consulate"),
        ("使014578", "使014578", "embassy"),
    ],
)
def test_mainland_formats_accept_real_plate_shapes(text: str, plate: str, fmt: str) -> None:
    assert match_format(text, MAINLAND) == (plate, fmt, 0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "·- ",
        "A12345",  # no province
        "港A12345",  # not a province character
        "台A12345",
        "京112345",  # the office letter must be a letter
        "京A1234",  # too short
        "京A123456789",  # too long
        "京A1234港",  # 港/澳 only on 粤Z plates
        "粤BX12345",  # 8 characters but X is not a new-energy letter
        "沪A12345X",  # large new-energy ends in D or F only
        "京A12345学",  # special suffix after 5, not 4
        "RJ14GH3783",  # Indian plates
        "MH12AU2433",
        "EMISIONES",
    ],
)
def test_mainland_formats_reject_what_is_not_a_plate(text: str) -> None:
    assert match_format(text, MAINLAND) is None


@pytest.mark.parametrize(
    ("text", "plate", "corrections"),
    [
        ("京AO1234", "京A01234", 1),
        ("京A1234O", "京A12340", 1),  # O never appears in a serial: it is a zero
        ("京A12I45", "京A12145", 1),  # I never appears in a serial: it is a one
        ("川A·OZ88M", "川A0Z88M", 1),
        ("京A1O3O5", "京A10305", 2),
        ("粤B0I2345", "粤BD12345", 2),  # new-energy small: the 3rd place must be a letter, 4th a digit
    ],
)
def test_confusions_are_corrected_only_where_the_format_demands(text: str, plate: str, corrections: int) -> None:
    assert match_format(text, MAINLAND) == (plate, match_format(plate, MAINLAND)[1], corrections)


def test_correction_limits_and_ambiguity() -> None:
    assert match_format("京AOOO45", MAINLAND) is None  # three corrections is too many
    assert match_format("京A1O3O5", MAINLAND, max_corrections=1) is None
    assert match_format("京A1234O", MAINLAND, max_corrections=0) is None
    assert match_format("京O12345", MAINLAND) is None  # O in the office-letter place: a zero does not fit there
    # Two different plates would fit with one correction each: ambiguous, so no reading at all.
    two = compile_formats(PlatesConfig(formats=[
        PlateFormat(name="a", pattern="[0-9]O", description="x"),
        PlateFormat(name="b", pattern="O[0-9]", description="y"),
    ]))
    assert match_format("OO", two) is None
    assert match_format("0O", two) == ("0O", "a", 0)


def test_normalise() -> None:
    assert normalise("京a·12 345") == "京A12345"
    assert normalise("粤Ｂ－Ｄ１２３４５") == "粤BD12345"
    assert normalise("  ") == ""


def test_plate_config_validation() -> None:
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        PlateFormat(name="bad", pattern="[A-Z", description="broken")
    with pytest.raises(ValidationError, match="appears twice"):
        PlatesConfig(formats=[mainland_formats()[0], mainland_formats()[0]])
    with pytest.raises(ValidationError, match="no plate could ever be kept"):
        PlatesConfig(formats=[])
    assert PlatesConfig(formats=[], enabled=False).formats == []
    with pytest.raises(ValidationError):
        PlateFormat(name="Has Spaces", pattern="x", description="names are short identifiers")
    with pytest.raises(ValidationError, match="bf16 needs plates.runtime: openvino"):
        PlatesConfig(precision="bf16")
    assert PlatesConfig(runtime="openvino", precision="bf16").precision == "bf16"


# ------------------------------------------------------------------------------------------ images


def _font() -> str:
    for f in CJK_FONTS:
        if f.is_file():
            return str(f)
    pytest.fail("Noto Sans CJK is not installed: run `make system-deps` (Debian package fonts-noto-cjk)")


def render_plate(text: str, kind: str = "blue") -> np.ndarray:
    """A mainland plate image (440x140 like the real 440x140 mm plate): province and office letter, the
    middle dot, then the serial. blue: white on blue; green: black on green; yellow: black on yellow."""
    bg, fg = {"blue": ((16, 77, 200), (255, 255, 255)), "green": ((108, 214, 122), (0, 0, 0)),
              "yellow": ((245, 194, 0), (0, 0, 0))}[kind]
    w, h = 440, 140
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    d.rounded_rectangle([5, 5, w - 6, h - 6], radius=10, outline=fg, width=3)
    font = ImageFont.truetype(_font(), int(h * 0.62), index=0)
    cw = (w - 30) / (len(text) + 0.5)
    x = 15.0
    for i, ch in enumerate(text):
        if i == 2:
            d.ellipse([x + cw * 0.15 - 5, h / 2 - 5, x + cw * 0.15 + 5, h / 2 + 5], fill=fg)
            x += cw * 0.5
        bb = d.textbbox((0, 0), ch, font=font)
        glyph = Image.new("L", (bb[2] - bb[0], bb[3] - bb[1]), 0)
        ImageDraw.Draw(glyph).text((-bb[0], -bb[1]), ch, font=font, fill=255)
        glyph = glyph.resize((int(cw * 0.86), int(h * 0.64)))
        im.paste(Image.new("RGB", glyph.size, fg), (int(x + (cw - glyph.size[0]) / 2), int((h - glyph.size[1]) / 2)),
                 glyph)
        x += cw
    return cv2.cvtColor(np.array(im), cv2.COLOR_RGB2BGR)


def paste_plate(image: np.ndarray, plate: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """``plate`` warped onto the quadrilateral ``quad`` of ``image``, then blurred a little and JPEG-compressed
    (q85) like a camera still."""
    h, w = plate.shape[:2]
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), np.float32(quad))
    size = (image.shape[1], image.shape[0])
    warped = cv2.warpPerspective(plate, m, size, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, size) > 127
    out = image.copy()
    out[mask] = warped[mask]
    out = cv2.GaussianBlur(out, (0, 0), 0.7)
    return cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 85])[1], cv2.IMREAD_COLOR)


def _grow(quad: np.ndarray, sx: float, sy: float) -> np.ndarray:
    c = quad.mean(axis=0)
    return (quad - c) * np.float32([sx, sy]) + c


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    return PlateReader()


@pytest.fixture(scope="module")
def city(media_dir: Path) -> np.ndarray:
    img = cv2.imread(str(media_dir / CITY))
    assert img is not None and img.shape[:2] == (3592, 5388)
    return img


def _img(media_dir: Path, rel: str) -> np.ndarray:
    img = cv2.imread(str(media_dir / rel))
    assert img is not None, rel
    return img


def test_no_reading_where_no_plate_is_readable(reader: PlateReader, city: np.ndarray, media_dir: Path) -> None:
    for box in CITY_NEGATIVES:
        assert reader.read(city, box) is None, box
    # A bus covered in words: the OCR reads them, none is a plate.
    bus = _img(media_dir, "generic_bus_ultralytics.jpg")
    texts = [c.text for c in reader.scan(bus, (21, 232, 805, 734))]
    assert "EMISIONES" in texts and reader.read(bus, (21, 232, 805, 734)) is None


def test_no_reading_on_small_vehicles_of_cctv_frames(reader: PlateReader, media_dir: Path, models_dir: Path) -> None:
    from nonsite.models import create_detector

    det = create_detector()
    seen = 0
    for video, frame_no in (("parking_lot_cctv_timelapse_a_640x480.mp4", 100),
                            ("street_india_intersection.mp4", 300), ("traffic_highway.mp4", 150)):
        cap = cv2.VideoCapture(str(media_dir / video))
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame_no)
        ok, frame = cap.read()
        cap.release()
        assert ok, video
        d = det.detect([frame])[0]
        for xyxy, name in zip(d.xyxy, d.data["class_name"], strict=True):
            if name in {"car", "truck", "bus"}:
                seen += 1
                assert reader.read(frame, tuple(xyxy)) is None, (video, xyxy)
    assert seen >= 10


@pytest.mark.parametrize(("image", "plate"), [(HONDA, "RJ14CD1295"), (PICKUP, "RJ14GH3783")])
def test_real_indian_plates_are_read_but_rejected_by_the_mainland_formats(
    reader: PlateReader, media_dir: Path, image: tuple[str, tuple[int, int, int, int]], plate: str
) -> None:
    img = _img(media_dir, image[0])
    read = [c for c in reader.scan(img, image[1]) if c.text == plate]
    assert read and read[0].confidence > 0.9 and read[0].format is None  # the OCR did read it ...
    assert reader.read(img, image[1]) is None  # ... and it is not a mainland plate


def test_a_configured_indian_format_reads_real_indian_plates(media_dir: Path) -> None:
    reader = PlateReader(PlatesConfig(formats=[INDIA]))
    for (rel, box), plate in ((HONDA, "RJ14CD1295"), (PICKUP, "RJ14GH3783"), (RICKSHAW, "MH12AU2433")):
        img = _img(media_dir, rel)
        r = reader.read(img, box)
        assert r is not None and r.text == plate and r.format == "india" and r.confidence >= 0.8, (rel, r)
        x1, y1, x2, y2 = r.crop_xyxy
        assert box[0] <= x1 < x2 <= box[2] and box[1] <= y1 < y2 <= box[3]
        assert r.crop.shape == (int(y2 - y1), int(x2 - x1), 3)
        assert np.array_equal(r.crop, img[int(y1):int(y2), int(x1):int(x2)])
    # The Honda's crop is its plate: it contains the plate's centre and is about the plate's width.
    r = reader.read(_img(media_dir, HONDA[0]), HONDA[1])
    cx, cy = HONDA_PLATE_QUAD.mean(axis=0)
    x1, y1, x2, y2 = r.crop_xyxy
    assert x1 < cx < x2 and y1 < cy < y2 and 60 < x2 - x1 < 110


SYNTHETIC = [
    ("京A12345", "blue", "standard"),
    ("京N8P2L6", "blue", "standard"),
    ("苏E5T0B9", "blue", "standard"),
    ("川A0Z88M", "blue", "standard"),
    ("粤BD12345", "green", "new_energy_small"),
    ("湘C56789D", "yellow", "new_energy_large"),
    ("冀B1234挂", "yellow", "trailer"),
]


@pytest.mark.parametrize(("plate", "kind", "fmt"), SYNTHETIC)
def test_synthetic_chinese_plate_on_a_real_car_is_read_exactly(
    reader: PlateReader, media_dir: Path, plate: str, kind: str, fmt: str
) -> None:
    img = paste_plate(_img(media_dir, HONDA[0]), render_plate(plate, kind), _grow(HONDA_PLATE_QUAD, 1.12, 1.25))
    r = reader.read(img, HONDA[1])
    assert r is not None and (r.text, r.format) == (plate, fmt) and r.confidence >= 0.8
    cx, cy = HONDA_PLATE_QUAD.mean(axis=0)
    x1, y1, x2, y2 = r.crop_xyxy
    assert x1 < cx < x2 and y1 < cy < y2 and 60 < x2 - x1 < 120
    # The module-level helper gives the same reading.
    assert read_plate(img, HONDA[1]) == r


def test_unreadably_small_synthetic_plates_give_no_reading(reader: PlateReader, city: np.ndarray) -> None:
    """44x19-pixel plates on the Hyundai's rear: the OCR drops or mangles the province character, so the
    reader must answer nothing, never a guess."""
    quad = np.float32([[3646, 2619], [3690, 2619], [3690, 2638], [3646, 2638]])
    for plate, kind, _ in SYNTHETIC:
        img = paste_plate(city, render_plate(plate, kind), quad)
        r = reader.read(img, HYUNDAI_REAR)
        assert r is None or r.text == plate, (plate, r)


def test_reads_are_thread_safe(reader: PlateReader, media_dir: Path) -> None:
    imgs = [paste_plate(_img(media_dir, HONDA[0]), render_plate(p, k), _grow(HONDA_PLATE_QUAD, 1.12, 1.25))
            for p, k, _ in SYNTHETIC[:4]]
    expected = [reader.read(im, HONDA[1]) for im in imgs]
    got: dict[int, object] = {}

    def work(i: int) -> None:
        got[i] = reader.read(imgs[i % 4], HONDA[1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(8)] == expected * 2
    assert [e.text for e in expected] == [p for p, _, _ in SYNTHETIC[:4]]


def test_bad_input(reader: PlateReader, media_dir: Path) -> None:
    img = _img(media_dir, HONDA[0])
    with pytest.raises(ValueError, match="BGR uint8"):
        reader.read(img.astype(np.float32), HONDA[1])
    with pytest.raises(ValueError, match="BGR uint8"):
        reader.read(img[:, :, 0], HONDA[1])
    assert reader.read(img, (100, 100, 105, 103)) is None  # degenerate box
    assert reader.read(img, (5000, 5000, 6000, 6000)) is None  # outside the image
    # A box reaching past the image edge is clipped, not an error (and the Indian plate in it is no match).
    assert reader.read(img, (400, 250, 1400, 900)) is None
    assert PlateReader(PlatesConfig(formats=[INDIA])).read(img, (400, 250, 1400, 900)).text == "RJ14CD1295"


def test_shared_reader_per_config_and_offline_loading(monkeypatch: pytest.MonkeyPatch, media_dir: Path) -> None:
    assert get_reader() is get_reader(PlatesConfig())
    assert get_reader(PlatesConfig(min_confidence=0.9)) is not get_reader()

    def no_network(*a: object, **k: object) -> None:
        raise OSError("network is off in this test")

    # The OCR's models are inside its wheel: a fresh reader loads and reads with the network cut.
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    fresh = PlateReader()
    img = paste_plate(_img(media_dir, HONDA[0]), render_plate("京A12345"), _grow(HONDA_PLATE_QUAD, 1.12, 1.25))
    assert fresh.read(img, HONDA[1]).text == "京A12345"


def test_openvino_reads_every_plate_exactly_as_onnxruntime(reader: PlateReader, media_dir: Path,
                                                            city: np.ndarray) -> None:
    """plates.runtime: openvino runs the same ONNX files: every text the OCR finds, with its confidence and box, is
    what ONNX Runtime finds (fp32), on readable synthetic plates, a real Indian plate and a street without plates."""
    ov = PlateReader(PlatesConfig(runtime="openvino"))
    honda = _img(media_dir, HONDA[0])
    cases = [(paste_plate(honda, render_plate(p, k), _grow(HONDA_PLATE_QUAD, 1.12, 1.25)), HONDA[1])
             for p, k, _ in SYNTHETIC]
    cases += [(honda, HONDA[1]), (city, HYUNDAI_REAR)]

    def seen(r: PlateReader, img: np.ndarray, box: tuple[int, int, int, int]) -> list[tuple[str, float, tuple]]:
        return [(c.text, round(c.confidence, 3), tuple(round(v) for v in c.xyxy)) for c in r.scan(img, box)]

    for img, box in cases:
        assert seen(ov, img, box) == seen(reader, img, box)
    assert [ov.read(img, box) == reader.read(img, box) for img, box in cases] == [True] * len(cases)
    assert [ov.read(img, box).text for img, box in cases[: len(SYNTHETIC)]] == [p for p, _, _ in SYNTHETIC]


def test_a_reading_runs_on_the_threads_asked_for() -> None:
    """plates.threads reaches both runtimes: one thread by default (the reading shares the box with the detector),
    all cores with 0; OpenVINO at the arithmetic asked for (its own default is bf16 on an AMX CPU)."""
    one = PlateReader()
    for part in (one._ocr.text_det, one._ocr.text_rec):
        assert part.session.session.get_session_options().intra_op_num_threads == 1
    every = PlateReader(PlatesConfig(threads=0))
    assert every._ocr.text_det.session.session.get_session_options().intra_op_num_threads == 0  # ORT: all cores
    ov = PlateReader(PlatesConfig(runtime="openvino"))
    for part in (ov._ocr.text_det, ov._ocr.text_rec):
        compiled = part.session.session.get_compiled_model()
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_openvino_refuses_ocr_models_other_than_the_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenVINO runtime loads rapidocr's own ONNX files by path: one that does not hash to the sha256 of
    rapidocr's model list is refused with a one-line way out, never run."""
    from rapidocr.inference_engine.base import InferSession

    real = InferSession.get_model_url

    def tampered(info: object) -> dict[str, str]:
        return {**real(info), "SHA256": "0" * 64}

    monkeypatch.setattr(InferSession, "get_model_url", staticmethod(tampered))
    with pytest.raises(PlateReaderError, match="not the one rapidocr lists .* plates.runtime: onnxruntime"):
        PlateReader(PlatesConfig(runtime="openvino"))
