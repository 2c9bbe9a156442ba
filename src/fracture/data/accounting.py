"""What was done with the data: every class, image, label line and object left out, and why.

A run is only as trustworthy as its data, and a dataset shrinks quietly: a label folder
that was not copied, a corrupt batch of images, a class under `data.min_instances`. This
module turns a `DatasetIndex` into one JSON-ready account of it, a short table for the
console, and a check that stops a run whose data shrank too much.

How training and evaluation use it (all three are pure functions of the index):

    from fracture.data.accounting import check_shrink, data_accounting, format_accounting

    index = build_index(data_cfg, splits=[...], ...)
    accounting = data_accounting(index)           # JSON-ready dict; evaluation passes
                                                  # splits=[the evaluated split]
    print(format_accounting(accounting))          # a few lines, before training/evaluating
    run_record["data"] = accounting               # e.g. run.json["data"]
    check_shrink(accounting, data_cfg.allow_shrink)  # DatasetError saying why, or nothing

Schema of `data_accounting` (counts are ints; a bucket with 0 is left out, so an empty
dict means nothing was left out there):

    {
      "annotations", "negatives", "min_instances", "multi_object_rule": the config in effect,
      "classes": {
        "kept": [names the model predicts, in output order],
        "dropped": [{"name", "train_instances", "reason"}],
        "renamed": {old name: new name}, "merged": {new name: [old names]},
      },
      "splits": {split: {
        "images_found", "images_used",
        "images_left_out": {reason key: count},     # every found image not used, once
        "label_lines_dropped": {reason key: count},
        "label_files_without_image": count,
        "listing_problems": {reason key: count},    # names a split listing gave (image
                                                    # list, split csv, class folders) that
                                                    # did not become an image found
        "objects_of_dropped_classes": {class name: count},
        "objects_not_target": count,                # one target per image
        "objects_of_dropped_classes_on_used_images": count,  # in no target (background
                                                    # for the detector)
        "objects_over_max_boxes": count,            # multi_object_rule=all: cut beyond
        "images_over_max_boxes": count,             # data.max_boxes, largest kept
      }},
      "reasons": {reason key: the reason in words, for every key used above},
      "nothing_dropped": bool,
    }

Image reason keys: `bad_image:<probe status>` (see `images.SKIP_REASONS`),
`no_label_file`, `only_dropped_classes`, `negative_dropped`, `positive_without_boxes`
(folder datasets under multi_object_rule=all; see `folders.py`) (and `unaccounted`, which
only a bug in the indexer could fill). Label line reason keys are
those of `labels.py` / `coco.py` / `folders.py`; listing keys those of `records.LISTING_PROBLEMS`.
"""

from __future__ import annotations

from collections import Counter

from fracture.data.classes import ClassMapping
from fracture.data.images import SKIP_REASONS
from fracture.data.index import DatasetIndex, SplitIndex
from fracture.data.layout import DatasetError, canonical_split
from fracture.data.records import LISTING_PROBLEMS

BAD_IMAGE = "bad_image:"
NO_LABEL_FILE = "no_label_file"
ONLY_DROPPED_CLASSES = "only_dropped_classes"
NEGATIVE_DROPPED = "negative_dropped"
POSITIVE_WITHOUT_BOXES = "positive_without_boxes"
OBJECTS_NOT_TARGET = "objects_not_target"
DROPPED_CLASS_ON_USED = "objects_of_dropped_classes_on_used_images"
OVER_MAX_BOXES = "objects_over_max_boxes"
IMAGES_OVER_MAX_BOXES = "images_over_max_boxes"
OBJECT_BUCKETS = (OBJECTS_NOT_TARGET, DROPPED_CLASS_ON_USED, OVER_MAX_BOXES)
UNACCOUNTED = "unaccounted"
MIN_CLASSES = 2
TOP_REASONS = 3


def data_accounting(index: DatasetIndex, splits: list[str] | None = None) -> dict:
    """Everything `index` left out, and why, as a JSON-ready dict (schema: module docstring).

    Args:
        index: the indexed dataset.
        splits: the splits to account for (aliases such as "val" work); None = all that
            were indexed. Evaluation, which indexes train only for the leakage check,
            passes the split it evaluates.
    """
    cfg = index.config
    names = list(index.splits) if splits is None else [canonical_split(s) for s in splits]
    per_split = {
        name: _split_accounting(index.split(name), index.classes, cfg.multi_object_rule)
        for name in names
    }
    accounting = {
        "format": cfg.format,
        "annotations": cfg.annotations,
        "negatives": cfg.negatives,
        "min_instances": index.classes.min_instances,
        "multi_object_rule": cfg.multi_object_rule,
        "classes": _class_accounting(index.classes),
        "splits": per_split,
    }
    accounting["reasons"] = _reasons_used(per_split, cfg)
    accounting["nothing_dropped"] = not accounting["classes"]["dropped"] and not any(
        _split_dropped_anything(s) for s in per_split.values()
    )
    return accounting


def _class_accounting(classes: ClassMapping) -> dict:
    """Kept, dropped (with why), renamed and merged classes of a mapping."""
    dropped = [
        {
            "name": name,
            "train_instances": int(count),
            "reason": f"fewer than data.min_instances={classes.min_instances} train instances",
        }
        for name, count in classes.dropped.items()
    ]
    sources_of: dict[str, list[str]] = {}
    for source, label_id in zip(classes.source_names, classes.source_to_label()):
        sources_of.setdefault(classes.label_names[label_id], []).append(source)
    merged = {label: sources for label, sources in sources_of.items() if len(sources) > 1}
    renamed = {
        source: label
        for label, sources in sources_of.items()
        if len(sources) == 1 and sources[0] != label
        for source in sources
    }
    return {"kept": classes.class_names, "dropped": dropped, "renamed": renamed, "merged": merged}


def _split_accounting(split: SplitIndex, classes: ClassMapping, rule: str) -> dict:
    report = split.report
    left_out = Counter({f"{BAD_IMAGE}{status}": n for status, n in report.bad_images.items()})
    left_out[NO_LABEL_FILE] = report.images_without_label_file
    left_out[ONLY_DROPPED_CLASSES] = report.images_only_dropped_classes
    left_out[NEGATIVE_DROPPED] = report.negatives_dropped
    left_out[POSITIVE_WITHOUT_BOXES] = report.positives_without_boxes_dropped
    # SplitReport puts every image in one bucket; should that ever break, it shows here.
    left_out[UNACCOUNTED] = report.images_found - report.images_used - sum(left_out.values())
    kept = set(classes.class_names)
    dropped_objects = {
        name: n for name, n in report.instances_before_filter.items() if name not in kept and n
    }
    return {
        "images_found": report.images_found,
        "images_used": report.images_used,
        "images_left_out": _nonzero(left_out),
        "label_lines_dropped": _nonzero(report.dropped_lines),
        "label_files_without_image": report.labels_without_image,
        "listing_problems": _nonzero(report.listing_problems),
        "objects_of_dropped_classes": dict(sorted(dropped_objects.items())),
        OBJECTS_NOT_TARGET: _objects_not_target(split, classes, rule),
        DROPPED_CLASS_ON_USED: report.dropped_class_objects_on_used_images,
        OVER_MAX_BOXES: report.objects_over_max_boxes,
        IMAGES_OVER_MAX_BOXES: report.images_over_max_boxes,
    }


def _objects_not_target(split: SplitIndex, classes: ClassMapping, rule: str) -> int:
    """Objects of kept classes that do not become the image's one target.

    "largest" and "first" keep one object; "union" also folds the target class's other
    boxes into the target box, so only objects of other classes are left out; "all"
    keeps every box as a detection target (those beyond `data.max_boxes` have their own
    bucket, `objects_over_max_boxes`).
    """
    if rule == "all":
        return 0
    label_to_class = classes.label_to_class()
    records = {str(r.image_path): r for r in split.records}
    count = 0
    for sample in split.samples:
        if not sample.has_box:
            continue
        objects = records[sample.image_path].objects
        kept = [label_to_class[o.class_id] for o in objects if o.class_id in label_to_class]
        if rule == "union":
            count += sum(1 for c in kept if c != sample.class_id)
        else:
            count += len(kept) - 1
    return count


def _nonzero(counts) -> dict:
    return {key: int(n) for key, n in sorted(counts.items()) if n}


def _split_dropped_anything(split: dict) -> bool:
    return bool(
        split["images_left_out"]
        or split["label_lines_dropped"]
        or split["label_files_without_image"]
        or split["listing_problems"]
        or split["objects_of_dropped_classes"]
        or any(split.get(key) for key in OBJECT_BUCKETS)
    )


def reason_text(
    key: str, annotations: str = "yolo", multi_object_rule: str = "largest", max_boxes: int = 32
) -> str:
    """A reason key of the accounting in words."""
    if key.startswith(BAD_IMAGE):
        status = key[len(BAD_IMAGE):]
        return f"bad image: {SKIP_REASONS.get(status, status.replace('_', ' '))}"
    fixed = {
        NO_LABEL_FILE: "not in the COCO file" if annotations == "coco" else "no label file",
        ONLY_DROPPED_CLASSES: "only objects of dropped classes (so not a negative either)",
        NEGATIVE_DROPPED: "no objects, and data.negatives=drop",
        POSITIVE_WITHOUT_BOXES: "a positive-class image without a box, under data.multi_object_rule=all "
        "(as background it would teach the detector to miss its finding)",
        **LISTING_PROBLEMS,
        UNACCOUNTED: "not in any bucket (a bug in fracture.data.index: please report it)",
        OBJECTS_NOT_TARGET: f"not the image's one target (data.multi_object_rule={multi_object_rule})",
        DROPPED_CLASS_ON_USED: "of dropped classes on used images (in no target"
        + ("; their regions train as background)" if multi_object_rule == "all" else ")"),
        OVER_MAX_BOXES: f"beyond data.max_boxes={max_boxes} on an image (the largest are kept)",
    }
    return fixed.get(key, key.replace("_", " "))


def _reasons_used(splits: dict, cfg) -> dict:
    keys = {
        k
        for s in splits.values()
        for k in (*s["images_left_out"], *s["label_lines_dropped"], *s["listing_problems"])
    }
    keys |= {k for k in OBJECT_BUCKETS if any(s.get(k) for s in splits.values())}
    return {k: reason_text(k, cfg.annotations, cfg.multi_object_rule, cfg.max_boxes) for k in sorted(keys)}


def format_accounting(acc: dict) -> str:
    """A few plain-text lines saying what was used and what was left out, per split."""
    classes = acc["classes"]
    source = "class folders" if acc["format"] == "folders" else f"annotations={acc['annotations']}"
    lines = [
        f"Data: {source}, negatives={acc['negatives']}, "
        f"min_instances={acc['min_instances']}",
        f"  classes kept ({len(classes['kept'])}): {', '.join(classes['kept'])}",
    ]
    for d in classes["dropped"]:
        lines.append(f"  class dropped: {d['name']} ({d['train_instances']} train instances): {d['reason']}")
    if classes["renamed"]:
        lines.append("  classes renamed: " + ", ".join(f"{a} -> {b}" for a, b in classes["renamed"].items()))
    for label, sources in classes["merged"].items():
        lines.append(f"  classes merged into {label}: {', '.join(sources)}")
    lines += _split_table(acc)
    lines += _label_lines(acc)
    if acc["nothing_dropped"]:
        lines.append("  nothing dropped: every image found is used, every class kept.")
    return "\n".join(lines)


def _split_table(acc: dict) -> list[str]:
    reasons = acc["reasons"]
    width = max([5, *(len(name) for name in acc["splits"])])
    rows = [f"  {'split':<{width}} {'found':>7} {'used':>7}  left out"]
    for name, s in acc["splits"].items():
        left = s["images_left_out"]
        why = "; ".join(f"{n} {reasons[k]}" for k, n in _top(left, len(left))) or "-"
        rows.append(f"  {name:<{width}} {s['images_found']:>7} {s['images_used']:>7}  {why}")
    return rows


def _label_lines(acc: dict) -> list[str]:
    """One line per split that lost label lines, label files or objects."""
    reasons, lines = acc["reasons"], []
    for name, s in acc["splits"].items():
        parts = []
        if s["label_lines_dropped"]:
            dropped = s["label_lines_dropped"].items()
            parts.append("label lines " + ", ".join(f"{reasons[k]} {n}" for k, n in dropped))
        if s["label_files_without_image"]:
            parts.append(f"label files without image {s['label_files_without_image']}")
        if s["listing_problems"]:
            listed = s["listing_problems"].items()
            parts.append("listed names " + ", ".join(f"{reasons[k]} {n}" for k, n in listed))
        if s["objects_of_dropped_classes"]:
            objects = s["objects_of_dropped_classes"].items()
            parts.append("objects of dropped classes " + ", ".join(f"{c} {n}" for c, n in objects))
        for key in OBJECT_BUCKETS:
            if s.get(key):
                on_images = f" (on {s[IMAGES_OVER_MAX_BOXES]} images)" if key == OVER_MAX_BOXES else ""
                parts.append(f"objects {reasons[key]} {s[key]}{on_images}")
        if parts:
            lines.append(f"  {name} also dropped: " + "; ".join(parts))
    return lines


def _top(counts: dict, n: int = TOP_REASONS) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def shrink_problems(acc: dict) -> list[str]:
    """Why the data shrank too much to trust a run on it (empty list: it did not).

    Too much is fewer than 2 classes for the model, or a split that uses fewer than half
    of the images found in it. Negatives left out because the config says
    `data.negatives=drop` are a choice, not a loss, and do not count against a split.
    """
    problems = []
    kept = acc["classes"]["kept"]
    if len(kept) < MIN_CLASSES:
        dropped = "; ".join(
            f"{d['name']} ({d['train_instances']} train instances)" for d in acc["classes"]["dropped"]
        )
        problems.append(
            f"only {len(kept)} class left ({', '.join(kept) or 'none'}); dropped: {dropped or 'none'}, "
            f"fewer than data.min_instances={acc['min_instances']} train instances"
        )
    for name, s in acc["splits"].items():
        chosen = s["images_left_out"].get(NEGATIVE_DROPPED, 0)
        expected = s["images_found"] - chosen
        if s["images_used"] < expected / 2:
            top = ", ".join(f"{acc['reasons'][k]}: {n}" for k, n in _top(s["images_left_out"]))
            problems.append(
                f"split {name!r} uses {s['images_used']} of {s['images_found']} images found"
                + (f" ({chosen} negatives dropped by choice)" if chosen else "")
                + f", fewer than half; top reasons: {top}"
            )
    return problems


def check_shrink(acc: dict, allow_shrink: bool) -> None:
    """Stop a run whose data shrank too much (see `shrink_problems`), unless allowed.

    Raises:
        DatasetError: naming each split and its numbers, the top reasons, and the way
            to go on anyway (`data.allow_shrink=true`).
    """
    problems = shrink_problems(acc)
    if problems and not allow_shrink:
        raise DatasetError(
            "The dataset shrank too much to trust this run: "
            + "; ".join(problems)
            + ". Fix the data (see the data accounting above), or set data.allow_shrink=true to go on anyway."
        )
