"""Inspect a dataset: python scripts/inspect_data.py data=<config> [data.root=DIR] [out=DIR]

Writes OUT/summary.json, OUT/report.md and OUT/samples_<split>.png.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="inspect_data")
def main(cfg: DictConfig) -> None:
    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index
    from fracture.data.inspect import write_inspection
    from fracture.data.layout import DatasetError

    try:
        data_cfg = data_config_from_hydra(cfg.data)
        index = build_index(data_cfg, splits=list(cfg.splits), cache_dir=cfg.paths.cache_dir)
    except (DatasetError, ValueError, FileExistsError) as exc:
        fail(exc)
    summary = write_inspection(index, cfg.out, cache_dir=cfg.paths.cache_dir)
    for name, split in summary["splits"].items():
        print(
            f"{name}: {split['images']} images, {split['images_used']} used, "
            f"{split['empty_labels']} empty labels, {split['boxes']} boxes, "
            f"dropped lines {split['dropped_lines'] or 0}, bad images {split['bad_images'] or 0}"
            + (f", listed but not read {split['listing_problems']}" if split["listing_problems"] else "")
        )
    print(f"classes: {summary['classes']['class_names']} (dropped: {summary['classes']['dropped'] or 'none'})")
    dups = summary["duplicates"]
    print(f"Roboflow source groups shared across splits: {summary['leakage']['groups_shared_between_splits']}")
    print(f"exact duplicates across splits: {dups['counts']['exact']}; "
          f"confirmed near duplicates: {dups['counts']['near']} "
          f"({dups['settings']['candidate_pairs_checked']} candidate pairs checked)")
    if "sources" in summary:
        print(f"YOLO-empty but COCO-annotated: {summary['sources']['yolo_empty_coco_annotated']}")
        if summary["sources"]["rename_suggestions"]:
            print(f"names disagree with COCO; suggested data.rename={summary['sources']['rename_suggestions']}")
    print(f"report: {Path(cfg.out) / 'report.md'}")


if __name__ == "__main__":
    main()
