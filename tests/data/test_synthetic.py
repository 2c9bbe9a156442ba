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
