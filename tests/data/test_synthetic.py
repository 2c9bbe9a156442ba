import hashlib

from fracture.data.config import DataConfig
from fracture.data.index import build_index
from fracture.data.synthetic import SyntheticSpec, ensure_synthetic, generate


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_spec_same_bytes_other_seed_other_bytes(tmp_path):
    spec = SyntheticSpec(per_class=2, rare_per_split=1, splits={"train": 1.0})
    a = digest(generate(tmp_path / "a", spec))
    assert a == digest(generate(tmp_path / "b", spec))
    assert a != digest(generate(tmp_path / "c", SyntheticSpec(per_class=2, rare_per_split=1, splits={"train": 1.0}, seed=1)))


def test_rare_class_is_dropped_and_negatives_present(synthetic_root):
    index = build_index(DataConfig(root=str(synthetic_root), annotations="merge", min_instances=5))
    # 3 rare images, some with a second fracture: still under min_instances.
    assert list(index.classes.dropped) == ["clavicle fracture"]
    assert 3 <= index.classes.dropped["clavicle fracture"] < 5
    assert index.classes.class_names[-1] == "no finding"
    report = index.split("train").report
    assert report.negatives > 0 and report.multi_object_images > 0


def test_ensure_regenerates_only_when_the_spec_changes(tmp_path):
    spec = SyntheticSpec(per_class=1, rare_per_split=0, splits={"train": 1.0})
    root = ensure_synthetic(tmp_path / "s", spec)
    stamp = (root / "data.yaml").stat().st_mtime_ns
    ensure_synthetic(root, spec)
    assert (root / "data.yaml").stat().st_mtime_ns == stamp
    ensure_synthetic(root, SyntheticSpec(per_class=2, rare_per_split=0, splits={"train": 1.0}))
    assert len(list((root / "train" / "images").iterdir())) > 6


def test_up_to_three_findings_per_image_when_asked(tmp_path):
    spec = SyntheticSpec(per_class=4, rare_per_split=0, splits={"train": 1.0}, second_fracture=0.5, max_findings=3)
    root = generate(tmp_path / "det", spec)
    counts = [len(p.read_text().splitlines()) for p in (root / "train" / "labels").glob("*.txt")]
    assert set(counts) == {0, 1, 2, 3}
    index = build_index(DataConfig(root=str(root), min_instances=1, multi_object_rule="all"), splits=["train"])
    assert {len(s.boxes) for s in index.split("train").samples} == {0, 1, 2, 3}
    classic = generate(tmp_path / "cls", SyntheticSpec(per_class=4, rare_per_split=0, splits={"train": 1.0}, second_fracture=0.5))
    assert max(len(p.read_text().splitlines()) for p in (classic / "train" / "labels").glob("*.txt")) == 2


def test_the_detection_data_config_composes_to_its_own_folder(tmp_path):
    from conftest import compose_cfg
    from fracture.data.config import DataConfig as Typed

    cfg = compose_cfg("config", ["data=synthetic_detection", f"paths.data_dir={tmp_path}"])
    data = Typed.from_mapping(cfg.data)
    assert data.multi_object_rule == "all" and data.max_boxes == 32
    assert data.root == str(tmp_path / "synthetic_detection")
    assert SyntheticSpec(**cfg.data.synthetic).max_findings == 3
    plain = compose_cfg("config", ["data=synthetic", f"paths.data_dir={tmp_path}"])
    assert plain.data.root != cfg.data.root and plain.data.multi_object_rule == "largest"
