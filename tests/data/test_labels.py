import pytest

from fracture.data import labels as L


@pytest.mark.parametrize(
    "line, reason",
    [
        ("0 0.1 0.2 0.3", L.ODD_COORDINATE_COUNT),
        ("0 0.1 0.2", L.TOO_FEW_POINTS),
        ("0 0.1 0.1 0.5 0.5", None),  # the 5-number box format, for contrast
        ("0 0.1 0.1 0.5 abc 0.2 0.2", L.NON_NUMERIC),
        ("0 0.1 nan 0.5 0.5 0.2 0.2", L.NON_FINITE),
        ("0 0.1 inf 0.5 0.5", L.NON_FINITE),
        ("7 0.5 0.5 0.2 0.2", L.UNKNOWN_CLASS),
        ("-1 0.5 0.5 0.2 0.2", L.INVALID_CLASS_ID),
        ("1.5 0.5 0.5 0.2 0.2", L.INVALID_CLASS_ID),
        ("0 0.1 0.1 1.8 0.5 0.3 0.9", L.OUT_OF_RANGE),
        ("0 0.5 0.5 0.0 0.2", L.ZERO_AREA),
        ("0 0.2 0.2 0.2 0.5 0.2 0.8", L.ZERO_AREA),  # collinear polygon, zero width
    ],
)
def test_each_malformed_case_has_its_reason(line, reason):
    parsed = L.parse_label_line(line, num_classes=3)
    if reason is None:
        assert isinstance(parsed, L.LabelObject)
    else:
        assert parsed == reason


def test_box_line_converts_center_format_to_xyxy():
    obj = L.parse_label_line("2 0.5 0.4 0.2 0.1", num_classes=3)
    assert obj.class_id == 2
    assert obj.box == pytest.approx((0.4, 0.35, 0.6, 0.45))


def test_polygon_becomes_its_bounding_box_and_repeated_last_point_is_fine():
    obj = L.parse_label_line("1 0.1 0.2 0.4 0.25 0.3 0.6 0.3 0.6", num_classes=3)
    assert obj.box == pytest.approx((0.1, 0.2, 0.4, 0.6))


def test_slight_overshoot_is_clipped_not_dropped():
    obj = L.parse_label_line("0 -0.02 0.1 0.5 0.1 0.5 1.03", num_classes=1)
    assert obj.box == pytest.approx((0.0, 0.1, 0.5, 1.0))


def test_file_parse_reports_file_and_line_and_skips_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.2 0.2\n\n0 0.1 x 0.2 0.2\n9 0.5 0.5 0.1 0.1\n")
    objects, dropped = L.read_label_file(path, num_classes=2)
    assert len(objects) == 1
    assert [(d.line_no, d.reason) for d in dropped] == [(3, L.NON_NUMERIC), (4, L.UNKNOWN_CLASS)]
    assert dropped[0].location == f"{path}:3"
