"""A deterministic, radiograph-like YOLO dataset for offline use, demos and tests.

Each image is a dark background with a soft-tissue silhouette and bright cortical bones
whose geometry depends on the anatomical region (= the class): parallel phalanges for
fingers, a radius/ulna pair for the forearm, one thick shaft for the humerus, a hinge for
the elbow, a ball and shaft for the shoulder, carpal pebbles for the wrist. A fracture is
a jagged dark line across a bone, labelled with a polygon around it. Negatives show a
region's anatomy with no fracture. One rare class has fewer instances than the default
`data.min_instances`, so the dropping rule shows. Optionally a Roboflow-style COCO file is
written too, and some YOLO files are emptied to mimic the "lost annotations" export defect.

The same `SyntheticSpec` always writes byte-identical files.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

REGIONS = ("elbow", "fingers", "forearm", "humerus", "shoulder", "wrist", "clavicle")
MARKER = ".synthetic.json"


@dataclass
class SyntheticSpec:
    """What to generate.

    Attributes:
        per_class: fracture images per common class, per split.
        rare_per_split: images of the rare class (the last region), per split.
        negatives: "no finding" images per split, as a fraction of the fracture images.
        splits: split name -> relative size (train 1.0; others scale `per_class`).
        min_side, max_side: image sides are drawn from this range (aspect ratios vary).
        second_fracture: chance of each further, smaller fracture on a fracture image: a
            second one, then (if `max_findings` allows) a third, and so on.
        max_findings: most fractures on one image. 2 (the classifier's default) gives
            images with 0, 1 or 2 findings; 3 (conf/data/synthetic_detection.yaml) also
            gives 3, so a detector sees images with several boxes.
        write_coco: also write `<split>/_annotations.coco.json` (Roboflow COCO layout).
        lost_yolo_labels: share of fracture images whose YOLO file is left empty (the
            COCO file keeps them), mimicking the defect of the real export.
        seed: base random seed.
    """

    per_class: int = 40
    rare_per_split: int = 3
    negatives: float = 0.5
    splits: dict[str, float] = field(default_factory=lambda: {"train": 1.0, "valid": 0.3})
    min_side: int = 160
    max_side: int = 256
    second_fracture: float = 0.15
    max_findings: int = 2
    write_coco: bool = False
    lost_yolo_labels: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_findings < 1:
            raise ValueError(f"data.synthetic.max_findings={self.max_findings}; a fracture image has at least 1.")

    @property
    def class_names(self) -> list[str]:
        return [f"{region} fracture" for region in REGIONS]


def _bone(canvas: np.ndarray, p: np.ndarray, q: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Draw a bone as a bright cortex around a slightly darker medulla."""
    a, b = tuple(int(v) for v in p), tuple(int(v) for v in q)
    cv2.line(canvas, a, b, 205, int(max(width, 2)), cv2.LINE_AA)
    cv2.line(canvas, a, b, 150, int(max(width * 0.45, 1)), cv2.LINE_AA)
    for end in (a, b):
        cv2.circle(canvas, end, int(width * 0.65), 215, -1, cv2.LINE_AA)
    return p, q, width


def _anatomy(region: str, canvas: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Draw the region's bones; return them as (p, q, width) segments a fracture can cross."""
    h, w = canvas.shape
    c = np.array([w / 2, h / 2]) + rng.uniform(-0.06, 0.06, 2) * (w, h)
    s = min(h, w)
    angle = rng.uniform(-0.35, 0.35)
    axis = np.array([math.sin(angle), math.cos(angle)])
    perp = np.array([axis[1], -axis[0]])
    bones = []
    if region == "fingers":
        for k in range(4):
            base = c + perp * (k - 1.5) * s * 0.13
            bones.append(_bone(canvas, base - axis * s * 0.38, base + axis * s * 0.3, s * 0.05))
    elif region == "forearm":
        for k in (-1, 1):
            base = c + perp * k * s * 0.1
            bones.append(_bone(canvas, base - axis * s * 0.42, base + axis * s * 0.42, s * 0.07))
    elif region == "humerus":
        bones.append(_bone(canvas, c - axis * s * 0.42, c + axis * s * 0.42, s * 0.14))
    elif region == "elbow":
        bones.append(_bone(canvas, c, c - axis * s * 0.45, s * 0.12))
        bend = np.array([math.sin(angle + 1.2), math.cos(angle + 1.2)])
        bones.append(_bone(canvas, c, c + bend * s * 0.42, s * 0.09))
    elif region == "shoulder":
        head = c - axis * s * 0.2
        cv2.circle(canvas, tuple(int(v) for v in head), int(s * 0.16), 200, -1, cv2.LINE_AA)
        bones.append(_bone(canvas, head, head + axis * s * 0.55, s * 0.12))
    elif region == "wrist":
        for k in (-1, 1):
            base = c + perp * k * s * 0.09 + axis * s * 0.1
            bones.append(_bone(canvas, base, base + axis * s * 0.4, s * 0.07))
        for _ in range(7):
            pebble = c - axis * s * rng.uniform(0.0, 0.22) + perp * s * rng.uniform(-0.16, 0.16)
            cv2.circle(canvas, tuple(int(v) for v in pebble), int(s * 0.045), 190, -1, cv2.LINE_AA)
    elif region == "clavicle":
        across = np.array([math.cos(angle * 0.3), math.sin(angle * 0.3)])
        bones.append(_bone(canvas, c - across * s * 0.4, c + across * s * 0.4, s * 0.06))
    return bones


def _fracture(canvas: np.ndarray, bone: tuple, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Draw a jagged dark line across a bone; return the polygon (pixels) around it."""
    p, q, width = bone
    t = rng.uniform(0.3, 0.7)
    centre = p + (q - p) * t
    along = (q - p) / (np.linalg.norm(q - p) + 1e-6)
    across = np.array([along[1], -along[0]])
    half = width * 0.75 * scale
    n = 6
    points = [
        centre + across * half * (2 * i / (n - 1) - 1) + along * rng.uniform(-0.25, 0.25) * width
        for i in range(n)
    ]
    pts = np.array(points, np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 25, max(2, int(width * 0.12)), cv2.LINE_AA)
    margin = width * 0.3
    corners = [
        centre - across * (half + margin) - along * margin * 1.5,
        centre + across * (half + margin) - along * margin * 1.5,
        centre + across * (half + margin) + along * margin * 1.5,
        centre - across * (half + margin) + along * margin * 1.5,
    ]
    return np.array(corners, np.float64)


def render_image(region: str, fractured: int, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """One radiograph-like image (uint8 HxW) and its fracture polygons in pixels."""
    h, w = size
    canvas = np.full((h, w), 12, np.uint8)
    tissue = np.zeros_like(canvas)
    cv2.ellipse(
        tissue,
        (w // 2, h // 2),
        (int(w * rng.uniform(0.32, 0.45)), int(h * rng.uniform(0.4, 0.5))),
        float(rng.uniform(-20, 20)),
        0,
        360,
        70,
        -1,
        cv2.LINE_AA,
    )
    canvas = cv2.add(canvas, tissue)
    bones = _anatomy(region, canvas, rng)
    polygons = []
    order = rng.permutation(len(bones))
    for k in range(fractured):
        polygons.append(_fracture(canvas, bones[order[k % len(bones)]], rng, 1.0 if k == 0 else 0.6))
    canvas = cv2.GaussianBlur(canvas, (0, 0), 1.2)
    noise = rng.normal(0, 6, canvas.shape)
    canvas = np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return canvas, polygons


def _polygon_line(class_id: int, polygon: np.ndarray, w: int, h: int) -> str:
    norm = np.clip(polygon / (w, h), 0.0, 1.0)
    return " ".join([str(class_id), *(f"{v:.6f}" for v in norm.flatten())])


def _findings(fractured: int, spec: SyntheticSpec, rng: np.random.Generator) -> int:
    """How many fractures a planned image gets: 0 for a negative, else 1 plus one more
    with chance `second_fracture` each time, up to `max_findings`. Draws from `rng`
    exactly as the two-finding generator did, so `max_findings=2` datasets are unchanged."""
    while 0 < fractured < spec.max_findings and rng.random() < spec.second_fracture:
        fractured += 1
    return fractured


def generate(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write the dataset under `root` (data.yaml, `<split>/images`, `<split>/labels`)."""
    spec = spec or SyntheticSpec()
    root = Path(root)
    names = spec.class_names
    for split_index, (split, ratio) in enumerate(spec.splits.items()):
        images_dir, labels_dir = root / split / "images", root / split / "labels"
        images_dir.mkdir(parents=True, exist_ok=True)
        labels_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([spec.seed, split_index])
        per_class = max(1, round(spec.per_class * ratio))
        plan = [(c, 1) for c in range(len(REGIONS) - 1) for _ in range(per_class)]
        plan += [(len(REGIONS) - 1, 1)] * spec.rare_per_split
        plan += [(int(rng.integers(len(REGIONS) - 1)), 0) for _ in range(round(len(plan) * spec.negatives))]
        coco_images, coco_annotations = [], []
        for i, (class_id, fractured) in enumerate(plan):
            fractured = _findings(fractured, spec, rng)
            h, w = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, 2))
            image, polygons = render_image(REGIONS[class_id], fractured, (h, w), rng)
            stem = f"{split}_{i:05d}_{REGIONS[class_id]}_{'fx' if fractured else 'neg'}"
            cv2.imwrite(str(images_dir / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            lines = [_polygon_line(class_id, p, w, h) for p in polygons]
            lost = bool(polygons) and rng.random() < spec.lost_yolo_labels
            (labels_dir / f"{stem}.txt").write_text("" if lost else "\n".join(lines) + ("\n" if lines else ""))
            coco_images.append({"id": i, "file_name": f"{stem}.jpg", "width": w, "height": h})
            for p in polygons:
                x1, y1 = np.clip(p.min(0), 0, (w, h))
                x2, y2 = np.clip(p.max(0), 0, (w, h))
                coco_annotations.append(
                    {
                        "id": len(coco_annotations),
                        "image_id": i,
                        # Roboflow puts a supercategory at id 0 and shifts the classes.
                        "category_id": class_id + 1,
                        "bbox": [round(float(x1), 3), round(float(y1), 3), round(float(x2 - x1), 3), round(float(y2 - y1), 3)],
                        "area": round(float((x2 - x1) * (y2 - y1)), 3),
                        "iscrowd": 0,
                    }
                )
        if spec.write_coco:
            categories = [{"id": 0, "name": "bones", "supercategory": "none"}]
            categories += [{"id": k + 1, "name": n, "supercategory": "bones"} for k, n in enumerate(names)]
            coco = {"images": coco_images, "annotations": coco_annotations, "categories": categories}
            (root / split / "_annotations.coco.json").write_text(json.dumps(coco))
    splits = {("val" if s == "valid" else s): f"../{s}/images" for s in spec.splits}
    (root / "data.yaml").write_text(yaml.safe_dump({**splits, "nc": len(names), "names": names}, sort_keys=False))
    (root / MARKER).write_text(json.dumps(asdict(spec), sort_keys=True))
    return root


def ensure_synthetic(root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Generate the dataset unless `root` already holds one made from the same spec."""
    spec = spec or SyntheticSpec()
    root = Path(root)
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(asdict(spec), sort_keys=True)):
        return root
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise FileExistsError(f"{root} exists and is not a synthetic dataset; refusing to overwrite it.")
    if root.exists():
        shutil.rmtree(root)
    return generate(root, spec)


# Folder-per-class datasets (fracture.data.folders): the same radiograph-like images,
# sorted into class folders instead of labelled by YOLO files.
FOLDER_LAYOUTS = ("splits", "classes")
SPLIT_CSV = "Utilities/Fracture Split/{split}.csv"  # FracAtlas' official split files
BOXES_DIR = "Annotations/YOLO"                      # FracAtlas' YOLO box files


@dataclass
class FolderSpec:
    """A binary folder-per-class dataset to generate.

    Attributes:
        layout: "splits" writes `<root>/<split>/<class>/*` (the S1 multi-region set's
            layout); "classes" writes `<root>/images/<class>/*` (FracAtlas' layout).
        positive, negative: the class folder names (fracture, no finding).
        per_split: split -> (positive images, negative images).
        split_csv: "classes" layout: also write FracAtlas-like split csvs (`SPLIT_CSV`,
            column `image_id`) for the splits of `per_split`.
        boxes: also write YOLO box files by stem (`BOXES_DIR`, class id 0), empty for
            negatives, as FracAtlas does.
        side: image side in pixels (square: these datasets test reading, not resizing).
        seed: random seed.
    """

    layout: str = "splits"
    positive: str = "fractured"
    negative: str = "not fractured"
    per_split: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"train": (12, 8), "val": (4, 3), "test": (4, 3)}
    )
    split_csv: bool = False
    boxes: bool = False
    side: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layout not in FOLDER_LAYOUTS:
            raise ValueError(f"layout={self.layout!r}; expected one of {', '.join(FOLDER_LAYOUTS)}.")


def _box_line(polygons: list[np.ndarray], side: int) -> str:
    """YOLO `0 cx cy w h` lines of the polygons' bounding boxes."""
    lines = []
    for polygon in polygons:
        (x1, y1), (x2, y2) = np.clip(polygon.min(0), 0, side), np.clip(polygon.max(0), 0, side)
        cx, cy, w, h = (x1 + x2) / 2 / side, (y1 + y2) / 2 / side, (x2 - x1) / side, (y2 - y1) / side
        lines.append(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(f"{line}\n" for line in lines)


def generate_folders(root: str | Path, spec: FolderSpec | None = None) -> Path:
    """Write a folder-per-class dataset under `root` (layout: `FolderSpec`). Image names
    are unique across splits, as FracAtlas' are, so csv files can name them alone."""
    spec = spec or FolderSpec()
    root = Path(root)
    regions = REGIONS[:-1]
    rng = np.random.default_rng(spec.seed)
    for split, (positives, negatives) in spec.per_split.items():
        rows = []
        for class_name, count, fractured in ((spec.positive, positives, 1), (spec.negative, negatives, 0)):
            folder = root / split / class_name if spec.layout == "splits" else root / "images" / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                region = regions[int(rng.integers(len(regions)))]
                image, polygons = render_image(region, fractured, (spec.side, spec.side), rng)
                stem = f"{split}_{class_name.replace(' ', '_')}_{i:04d}"
                cv2.imwrite(str(folder / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
                rows.append(f"{stem}.jpg")
                if spec.boxes:
                    (root / BOXES_DIR).mkdir(parents=True, exist_ok=True)
                    (root / BOXES_DIR / f"{stem}.txt").write_text(_box_line(polygons, spec.side))
        if spec.split_csv and spec.layout == "classes":
            path = root / SPLIT_CSV.format(split=split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("image_id\n" + "".join(f"{name}\n" for name in rows))
    return root
