from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.config.data import DataConfig
from posturescreen.data.manifest import ManifestError, load_manifest


def _photo(path: Path, size=(20, 16), mode="RGB") -> str:
    shade = sum(path.name.encode()) % 200  # distinct files have distinct content
    Image.new(mode, size, shade if mode != "RGB" else (shade, 64, 32)).save(path)
    return path.name


def _write(folder: Path, rows: list[dict] | str, name="manifest.csv") -> Path:
    path = folder / name
    if isinstance(rows, str):
        path.write_text(rows)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def good_rows(tmp_path):
    rows = []
    for i in range(4):
        rows.append(
            {"subject_id": f"S{i}", "image": _photo(tmp_path / f"p{i}.png"), "ch": i % 2, "nsp": 0}
        )
    return rows


def _problems(path, **kw) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, **kw)
    return [str(p) for p in info.value.problems]


def test_good_manifest_loads(tmp_path, good_rows):
    m = load_manifest(_write(tmp_path, good_rows), check_images=True)
    assert len(m.table) == 4 and m.table["ch"].tolist() == [0, 1, 0, 1]
    assert m.table["row"].tolist() == [2, 3, 4, 5]
    assert Path(m.table["image_path"][0]).is_absolute()


def test_missing_column_named(tmp_path, good_rows):
    for r in good_rows:
        del r["nsp"]
    (msg,) = _problems(_write(tmp_path, good_rows))
    assert "required column 'nsp' is missing" in msg


def test_every_problem_reported_at_once_with_rows(tmp_path, good_rows):
    good_rows[0]["ch"] = "yes"
    good_rows[1]["nsp"] = 2
    good_rows[2]["image"] = "nowhere.png"
    good_rows.append(dict(good_rows[3]))  # duplicate of row 5 -> row 6
    good_rows.append({"subject_id": "S1", "image": _photo(tmp_path / "x.png"), "ch": 0, "nsp": 2})
    good_rows.append({"subject_id": "S9", "image": _photo(tmp_path / "y.png"), "ch": "", "nsp": 0})
    msgs = _problems(_write(tmp_path, good_rows))
    text = "\n".join(msgs)
    assert "row 2, column 'ch': label must be 0 or 1, got 'yes'" in text
    assert "row 3, column 'nsp': label must be 0 or 1, got '2'" in text
    assert "row 4, column 'image'" in text and "nowhere.png: file not found" in text
    assert "listed more than once (rows 5, 6)" in text
    assert "subject 'S1' has conflicting labels (row 3=1, row 7=0)" in text
    assert "row 8, column 'ch': label must be 0 or 1, got ''" in text


def test_unreadable_image_only_with_check_images(tmp_path, good_rows):
    (tmp_path / "p0.png").write_text("this is text, not a PNG")
    path = _write(tmp_path, good_rows)
    load_manifest(path)  # existence only
    (msg,) = _problems(path, check_images=True)
    assert msg.startswith("row 2, column 'image'") and "not a readable image" in msg


def test_bad_images_can_be_collected_instead(tmp_path, good_rows):
    (tmp_path / "p1.png").unlink()
    m = load_manifest(_write(tmp_path, good_rows), allow_bad_images=True)
    assert list(m.bad_images) == [1] and "file not found" in m.bad_images[1]


@pytest.mark.parametrize(
    "content,expected",
    [
        ("", "empty manifest"),
        ("subject_id,image,ch,nsp\n", "header but no photo rows"),
    ],
)
def test_empty_and_header_only(tmp_path, content, expected):
    (msg,) = _problems(_write(tmp_path, content))
    assert expected in msg


def test_bom_is_accepted_and_non_utf8_named(tmp_path, good_rows):
    text = pd.DataFrame(good_rows).to_csv(index=False)
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert len(load_manifest(path).table) == 4
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(text.replace("S0", "Sö").encode("latin-1"))
    (msg,) = _problems(bad)
    assert "not UTF-8" in msg and "line 2" in msg


def test_configurable_columns(tmp_path, good_rows):
    rows = [
        {"worker": r["subject_id"], "photo": r["image"], "headache": r["ch"]} for r in good_rows
    ]
    data = DataConfig(subject_column="worker", image_column="photo", label_columns=["headache"])
    m = load_manifest(_write(tmp_path, rows), data)
    assert m.subjects.tolist() == ["S0", "S1", "S2", "S3"]


def test_directory_where_file_expected(tmp_path, good_rows):
    (tmp_path / "adir").mkdir()
    good_rows[0]["image"] = "adir"
    (msg,) = _problems(_write(tmp_path, good_rows))
    assert "is a directory" in msg


def test_cli_validate_ok_and_errors(tmp_path, good_rows):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(_write(tmp_path, good_rows))])
    assert ok.exit_code == 0, ok.output
    assert "4 photos of 4 subjects" in ok.output
    good_rows[0]["ch"] = "maybe"
    bad = runner.invoke(app, ["validate", str(_write(tmp_path, good_rows))])
    assert bad.exit_code == 2
    assert "row 2, column 'ch'" in bad.output


def test_image_modes_become_rgb_and_exif_rotation_applies(tmp_path):
    from posturescreen.data.images import read_image_file

    for mode in ("L", "P", "RGBA", "CMYK", "I;16", "LA", "1"):
        ext = "jpg" if mode == "CMYK" else "png"
        p = tmp_path / f"m_{mode.replace(';', '')}.{ext}"
        if mode == "I;16":
            Image.fromarray(np.full((10, 12), 40000, np.uint16)).save(p)
        else:
            Image.new(mode, (12, 10)).save(p)
        img, size, digest = read_image_file(p)
        assert img.mode == "RGB" and img.size == (12, 10) == size and len(digest) == 64
    # EXIF orientation 6 (rotate 90° clockwise): a 30x20 stored image is 20x30 upright
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 20), (200, 10, 10)).save(p, exif=exif)
    img, size, _ = read_image_file(p)
    assert img.size == (20, 30) and size == (20, 30)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    from posturescreen.data import images

    p = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40,000 px > 2 x limit
    with pytest.raises(images.ImageReadError, match="decompression bomb"):
        images.read_image_file(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # between 1x and 2x: warning tier
    with pytest.raises(images.ImageReadError, match="decompression bomb"):
        images.read_image_file(p)


def test_truncated_and_empty_files(tmp_path):
    from posturescreen.data.images import ImageReadError, read_image_file

    p = tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="t.jpg"):
        read_image_file(p)
    z = tmp_path / "z.jpg"
    z.write_bytes(b"")
    with pytest.raises(ImageReadError, match="0 bytes"):
        read_image_file(z)


def test_letterbox_keeps_aspect():
    from posturescreen.data.images import letterbox, letterbox_geometry

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    arr = letterbox(img, 32)
    assert arr.shape == (3, 32, 32)
    scale, ox, oy = letterbox_geometry(40, 20, 32)
    assert (scale, ox, oy) == (0.8, 0, 8)
    assert arr[0, 16, 16] == 255 and arr[0, 2, 16] != 255  # padded bands above and below
