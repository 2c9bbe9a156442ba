"""The data inspector: `summary.json`, `report.md` and a grid of samples with boxes.

`summarize` is pure (index in, JSON-ready dict out); `write_inspection` renders it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from fracture.data.accounting import data_accounting, format_accounting
from fracture.data.crosscheck import merge_agreement, rename_suggestions
from fracture.data.duplicates import duplicate_report
from fracture.data.index import DatasetIndex
from fracture.data.leakage import augmentation_groups
from fracture.data.records import LISTING_PROBLEMS
from fracture.runs import write_json, write_text

GRID_COLUMNS = 4
GRID_CELL = 256


def summarize(index: DatasetIndex, cache_dir: str | Path | None = None) -> dict:
    """Everything the inspector reports, as a JSON-ready dict.

    Keys: `dataset`, `classes` (kept, dropped, class_names, histograms), `splits.<name>`
    (images, empty_labels, boxes, dropped_lines, ...), `accounting` (what was left out and
    why, as training and evaluation print it), `leakage` (Roboflow source groups per split
    and shared between splits), `duplicates` (cross-split exact and near-duplicate pairs,
    `fracture.data.duplicates.duplicate_report`; thumbnails cached under `cache_dir`) and,
    when a split has both
    YOLO labels and a COCO file, `sources` (per-split disagreements and the name-agreement
    matrix over matched boxes).
    """
    cfg, classes = index.config, index.classes
    splits = {name: s.report.to_dict() for name, s in index.splits.items()}
    summary: dict = {
        "dataset": {
            "root": str(index.layout.root),
            "format": cfg.format,
            "splits_from": {n: p.declared_as for n, p in index.layout.splits.items()},
            "data_yaml": str(index.layout.yaml_path) if index.layout.yaml_path else None,
            "annotations": cfg.annotations,
            "negatives": cfg.negatives,
            "multi_object_rule": cfg.multi_object_rule,
            "min_instances": cfg.min_instances,
            "rename": cfg.rename,
            "layout_notes": index.layout.notes,
            "splits_missing": index.layout.missing,
        },
        "classes": {
            "source_names": classes.source_names,
            "label_names": classes.label_names,
            "kept": classes.kept,
            "dropped": classes.dropped,
            "class_names": classes.class_names,
            "instances_before_filter": {n: s["instances_before_filter"] for n, s in splits.items()},
            "instances_after_filter": {n: s["instances_after_filter"] for n, s in splits.items()},
            "samples_per_class": {n: s["samples_per_class"] for n, s in splits.items()},
        },
        "splits": splits,
    }
    summary["accounting"] = data_accounting(index)
    leakage = index_leakage(index, cache_dir)
    summary["leakage"], summary["duplicates"] = leakage["groups"], leakage["duplicates"]
    checks = {n: s.report.crosscheck for n, s in index.splits.items() if s.report.crosscheck}
    if checks:
        agreement = merge_agreement([c["name_agreement"] for c in checks.values()])
        summary["sources"] = {
            "per_split": {
                n: {k: v for k, v in c.items() if k != "name_agreement"} for n, c in checks.items()
            },
            "yolo_empty_coco_annotated": {n: c["yolo_empty_coco_annotated"] for n, c in checks.items()},
            "name_agreement": agreement,
            "rename_suggestions": _suggest(agreement),
            "rename_in_effect": cfg.rename,
        }
    return summary


def index_leakage(index: DatasetIndex, cache_dir: str | Path | None = None) -> dict:
    """Leakage across the indexed splits: `groups` (shared Roboflow source groups) and
    `duplicates` (exact and confirmed near-duplicate pairs), over every decodable image."""
    files = {
        name: [str(r.image_path) for r in s.records if r.probe.ok] for name, s in index.splits.items()
    }
    return {"groups": augmentation_groups(files), "duplicates": duplicate_report(files, cache_dir)}


def _suggest(agreement: dict[str, dict[str, int]]) -> dict[str, str]:
    return rename_suggestions({k: Counter(v) for k, v in agreement.items()})


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table (used by every report.md this project writes)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(summary: dict, grid_name: str | None) -> str:
    """Markdown report of a `summarize` dict."""
    ds, classes, splits = summary["dataset"], summary["classes"], summary["splits"]
    out = [f"# Data report: `{ds['root']}`", ""]
    source = "class folders" if ds["format"] == "folders" else ds["annotations"]
    out.append(
        f"Annotations: **{source}**; negatives: **{ds['negatives']}**; "
        f"multi-object rule: **{ds['multi_object_rule']}**; min_instances: **{ds['min_instances']}**; "
        f"rename: `{ds['rename'] or {}}`."
    )
    for split, where in ds["splits_from"].items():
        out.append(f"- {split}: from {where}")
    for note in ds["layout_notes"]:
        out.append(f"- layout: {note}")
    out += ["", "## What was left out", "", "```text", format_accounting(summary["accounting"]), "```"]
    out += ["", "## Splits", ""]
    rows = []
    for name, s in splits.items():
        rows.append(
            [
                name,
                s["images"],
                s["images_used"],
                s["empty_labels"],
                s["boxes"],
                sum(s["dropped_lines"].values()),
                sum(s["bad_images"].values()),
                s["images_without_label_file"],
                s["labels_without_image"],
                s["multi_object_images"],
                s["multi_class_images"],
                s["filled_from_coco"],
                s["negatives"],
            ]
        )
    out.append(
        markdown_table(
            ["split", "images", "used", "empty labels", "boxes", "dropped lines", "bad images",
             "no label file", "label w/o image", "multi-object", "multi-class", "filled from COCO",
             "negatives"],
            rows,
        )
    )
    out += ["", "## Classes", ""]
    names = classes["label_names"]
    hist_rows = []
    for n in names + ([c for c in classes["class_names"] if c not in names]):
        row = [n + (" (dropped)" if n in classes["dropped"] else "")]
        for split in splits:
            row += [
                classes["instances_before_filter"][split].get(n, 0),
                classes["instances_after_filter"][split].get(n, 0),
                classes["samples_per_class"][split].get(n, 0),
            ]
        hist_rows.append(row)
    header = ["class"] + [f"{s} {k}" for s in splits for k in ("instances", "kept instances", "images")]
    out.append(markdown_table(header, hist_rows))
    out.append("")
    out.append(f"Kept (model outputs, in order): {classes['class_names']}.")
    if classes["dropped"]:
        out.append(f"Dropped (fewer than {ds['min_instances']} train instances): {classes['dropped']}.")
    out += ["", "## Dropped label lines", ""]
    for name, s in splits.items():
        for reason, count in s["dropped_lines"].items():
            out.append(f"- {name}: **{reason}** x{count}")
            out += [f"  - `{e}`" for e in s["dropped_line_examples"].get(reason, [])]
    if not any(s["dropped_lines"] for s in splits.values()):
        out.append("None.")
    out += ["", "## Images", ""]
    for name, s in splits.items():
        size = s["image_size"]
        if size:
            out.append(
                f"- {name}: width {size['width']}, height {size['height']}, long side median "
                f"{size['long_side']['median']:.0f} (over 1024 px: {size['long_side_over_1024']})"
            )
        if s["bad_images"]:
            out.append(f"- {name}: skipped bad images {s['bad_images']}")
            out += [f"  - `{e}`" for e in s["bad_image_examples"]]
        if s["image_notes"]:
            out.append(f"- {name}: kept but notable {s['image_notes']}")
        for key in ("images_without_label_file", "labels_without_image", "positives_without_boxes"):
            if s[key]:
                out.append(f"- {name}: {key.replace('_', ' ')}: {s[key]}")
                out += [f"  - `{e}`" for e in s[f"{key}_examples"]]
        for reason, count in s["listing_problems"].items():
            out.append(f"- {name}: listed but not read, {LISTING_PROBLEMS.get(reason, reason)}: {count}")
            out += [f"  - `{e}`" for e in s["listing_problem_examples"].get(reason, [])]
    out += ["", "## Leakage", ""]
    out += leakage_lines(summary["leakage"], summary["duplicates"])
    if "sources" in summary:
        src = summary["sources"]
        out += ["", "## YOLO vs COCO cross-check", ""]
        for split, c in src["per_split"].items():
            agreement = c["box_agreement"]
            out.append(
                f"- {split}: YOLO-empty but COCO-annotated images **{c['yolo_empty_coco_annotated']}** "
                f"(by COCO box count {c['yolo_empty_coco_annotated_by_box_count']}); "
                f"COCO-empty but YOLO-annotated {c['coco_empty_yolo_annotated']}; "
                f"box-count mismatches {c['box_count_mismatch']}; matched boxes {c['matched_boxes']}, "
                f"within {agreement['tolerance_px']} px: {agreement['within_tolerance']}/{agreement['compared']}"
            )
            for e in agreement["exceptions"][:10]:
                out.append(f"  - box differs: {e}")
        coco_names = sorted({c for row in src["name_agreement"].values() for c in row})
        rows = [[y] + [row.get(c, 0) for c in coco_names] for y, row in src["name_agreement"].items()]
        out += ["", "Name agreement over matched boxes (rows: YOLO name from data.yaml, columns: COCO name):", ""]
        out.append(markdown_table(["YOLO \\ COCO"] + coco_names, rows))
        suggested, in_effect = src["rename_suggestions"], src["rename_in_effect"] or {}
        if suggested:
            out.append("")
            out.append(f"**YOLO names disagree with COCO.** Suggested fix: `data.rename={suggested}`.")
            if all(in_effect.get(k) == v for k, v in suggested.items()):
                out.append(f"The `data.rename` in effect (`{in_effect}`) applies exactly this fix.")
            else:
                out.append(f"Not applied: the `data.rename` in effect is `{in_effect}`.")
    if grid_name:
        out += ["", "## Samples", "", f"![samples]({grid_name})"]
    return "\n".join(out) + "\n"


def leakage_lines(groups: dict, duplicates: dict, listed: int = 10) -> list[str]:
    """Markdown lines for shared Roboflow groups and cross-split exact/near duplicates."""
    out = []
    for split, g in groups["per_split"].items():
        out.append(f"- {split}: {g['files']} files from {g['groups']} Roboflow source groups")
    for pair, n in groups["groups_shared_between_splits"].items():
        out.append(f"- source groups shared by {pair}: **{n}**")
    min_score = duplicates["settings"]["near_duplicate_min_score"]
    for kind, words in (("exact", "exact duplicates (same decoded pixels)"),
                        ("near", f"confirmed near duplicates (score >= {min_score})")):
        for pair, n in duplicates["counts"][kind].items():
            out.append(f"- {words} across {pair}: **{n}**")
        for e in duplicates[kind][:listed]:
            score = f" (score {e['score']})" if "score" in e else ""
            out.append(f"  - `{e['paths'][0]}` ~ `{e['paths'][1]}`{score}")
    for split, n in duplicates["within_split"].items():
        out.append(f"- within {split}: {n['exact']} exact and {n['near']} near-duplicate pairs")
    if duplicates["unreadable"]:
        out.append(f"- not compared (could not be decoded): {len(duplicates['unreadable'])}")
    if any(groups["groups_shared_between_splits"].values()) or duplicates["exact"] or duplicates["near"]:
        out += ["", "**Caveat:** splits share source images or duplicates; metrics on them are optimistic."]
    return out


def render_grid(index: DatasetIndex, split: str, count: int = 16, seed: int = 0) -> np.ndarray:
    """A BGR grid of random used images of a split, all objects drawn, target in red."""
    split_index = index.split(split)
    records = {str(r.image_path): r for r in split_index.records}
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(split_index.samples), size=min(count, len(split_index.samples)), replace=False)
    class_names = index.classes.class_names
    cells = []
    for k in sorted(picks):
        sample = split_index.samples[int(k)]
        image = cv2.imread(sample.image_path, cv2.IMREAD_COLOR)
        if image is None:
            continue
        h, w = image.shape[:2]
        scale = GRID_CELL / max(h, w)
        image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))))
        cell = np.zeros((GRID_CELL, GRID_CELL, 3), np.uint8)
        cell[: image.shape[0], : image.shape[1]] = image
        sw, sh = image.shape[1], image.shape[0]
        for obj in records[sample.image_path].objects:
            x1, y1, x2, y2 = obj.box
            cv2.rectangle(cell, (int(x1 * sw), int(y1 * sh)), (int(x2 * sw), int(y2 * sh)), (0, 200, 0), 1)
        if sample.has_box:
            x1, y1, x2, y2 = sample.box
            cv2.rectangle(cell, (int(x1 * sw), int(y1 * sh)), (int(x2 * sw), int(y2 * sh)), (0, 0, 255), 2)
        label = class_names[sample.class_id]
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined: readable on any film
            cv2.putText(cell, label[:28], (4, GRID_CELL - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, thickness)
        cells.append(cell)
    while len(cells) % GRID_COLUMNS:
        cells.append(np.zeros((GRID_CELL, GRID_CELL, 3), np.uint8))
    rows = [np.hstack(cells[i : i + GRID_COLUMNS]) for i in range(0, len(cells), GRID_COLUMNS)]
    return np.vstack(rows)


def write_inspection(
    index: DatasetIndex, out_dir: str | Path, grid_split: str | None = None, cache_dir: str | Path | None = None
) -> dict:
    """Write `summary.json`, `report.md` and `samples_<split>.png` into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(index, cache_dir)
    grid_split = grid_split or next(iter(index.splits))
    grid_name = f"samples_{grid_split}.png"
    cv2.imwrite(str(out_dir / grid_name), render_grid(index, grid_split))
    write_json(out_dir / "summary.json", summary)
    write_text(out_dir / "report.md", render_report(summary, grid_name))
    return summary
