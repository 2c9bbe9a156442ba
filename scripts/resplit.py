"""Duplicate-proof re-split: python scripts/resplit.py data=<config> [data.root=DIR] out=DIR

Writes OUT/train.txt, OUT/valid.txt, OUT/test.txt (absolute image paths) and OUT/data.yaml,
prints per split images, clusters and classes, then re-checks the new lists for leakage.
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="resplit")
def main(cfg: DictConfig) -> None:
    import time

    from fracture.data.config import data_config_from_hydra
    from fracture.data.index import build_index
    from fracture.data.layout import DatasetError, resolve_layout
    from fracture.data.resplit import resplit_index, split_table, verify, write_lists

    started = time.monotonic()
    try:
        data_cfg = data_config_from_hydra(cfg.data)
        layout = resolve_layout(data_cfg.root, data_cfg.yaml)
        splits = [s for s in cfg.splits if s not in layout.missing]
        for s in cfg.splits:
            if s in layout.missing:
                print(f"split {s}: not pooled ({layout.missing[s]})")
        index = build_index(data_cfg, splits=splits, cache_dir=cfg.paths.cache_dir)
        result = resplit_index(index, dict(OmegaConf.to_container(cfg.fractions)), cfg.seed, Path(cfg.paths.cache_dir))
    except (DatasetError, ValueError, FileExistsError) as exc:
        fail(exc)
    print(f"pooled {sum(len(v) for v in result.files.values())} images of {splits} from {layout.root}; "
          f"left out {len(result.skipped)} (not decodable)" + "".join(f"\n  - {p}: {why}" for p, why in list(result.skipped.items())[:10]))
    for split, row in split_table(result).items():
        print(f"{split}: {row['images']} images, {row['groups']} groups, per class {row['per_class']}")
    if result.coco_only:
        print(f"note: {result.coco_only} images have objects only in a COCO file (their YOLO file is empty); "
              "a reader that takes labels from the YOLO files beside the images sees them as negatives.")
    yaml_path = write_lists(result, Path(cfg.out), index.classes.source_names)
    check = verify(result.files, Path(cfg.paths.cache_dir))
    print(f"verify: shared Roboflow groups {check['shared_roboflow_groups']}, exact duplicates {check['exact']}, "
          f"confirmed near duplicates {check['near']}")
    (Path(cfg.out) / "resplit.json").write_text(json.dumps(
        {"seed": cfg.seed, "fractions": dict(cfg.fractions), "source": str(layout.root), "splits": split_table(result),
         "skipped": result.skipped, "verify": {k: v for k, v in check.items() if k != "duplicates"}}, indent=1))
    print(f"wrote {yaml_path} ({time.monotonic() - started:.0f} s)")
    leaks = sum(check["exact"].values()) + sum(check["near"].values()) + sum(check["shared_roboflow_groups"].values())
    if leaks:
        fail(ValueError(f"the new split still leaks ({leaks} cross-split relations); see {Path(cfg.out) / 'resplit.json'}"))


if __name__ == "__main__":
    main()
