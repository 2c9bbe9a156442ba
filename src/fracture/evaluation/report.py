"""report.md: the human-readable summary of an evaluation, figures embedded.

Values are NaN before metrics.json is written and None after; both read "n/a", and the
reasons the metric blocks give for them (`undefined`) are listed under the headline.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fracture.data.inspect import markdown_table


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _ci(ci) -> str:
    if ci is None:
        return "n/a"
    lo, hi = ci
    return "n/a" if lo is None or math.isnan(lo) else f"{100 * lo:.1f}-{100 * hi:.1f}%"


def _num(value, digits=3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _num_ci(ci) -> str:
    """A CI of a 0-1 score that is not a rate (AP), as numbers."""
    return "n/a" if ci is None or ci[0] is None or math.isnan(ci[0]) else f"{_num(ci[0])}-{_num(ci[1])}"


METRIC_BLOCKS = ("classification", "auc", "calibration", "screening", "boxes", "detection")


def undefined_lines(result: dict) -> list[str]:
    """One bullet per n/a value, `block/path: reason`, from each block's `undefined`."""
    lines = []
    for block in METRIC_BLOCKS:
        for path, reason in ((result.get(block) or {}).get("undefined") or {}).items():
            lines.append(f"- `{block}/{path}`: {reason}")
    return lines


def headline_rows(result: dict) -> list[list[str]]:
    c, b = result["classification"], result["boxes"]
    rows = [
        ["accuracy", _pct(c["accuracy"]), _ci(c["accuracy_ci95"])],
        ["macro F1 / weighted F1", f"{_num(c['f1']['macro'])} / {_num(c['f1']['weighted'])}", ""],
        ["macro recall (balanced accuracy)", _pct(c["recall"]["macro"]), ""],
        ["macro one-vs-rest ROC-AUC", _num(result["auc"]["macro"]), ""],
        ["expected calibration error", _num(result["calibration"]["ece"]), ""],
    ]
    s = result.get("screening")
    if s:
        rows += [
            [f"screening sensitivity (threshold {s['threshold']:.3f}, from {s['locked']['chosen_on']})",
             _pct(s["sensitivity"]["value"]), _ci(s["sensitivity"]["ci95"])],
            ["screening specificity", _pct(s["specificity"]["value"]), _ci(s["specificity"]["ci95"])],
            ["screening PPV / NPV", f"{_pct(s['ppv']['value'])} / {_pct(s['npv']['value'])}",
             f"{_ci(s['ppv']['ci95'])} / {_ci(s['npv']['ci95'])}"],
        ]
    d = result.get("detection")
    if d:
        # A detector is judged by every box: these come first, and the one-box rows below say
        # that they score only each image's top box (otherwise the two AP50s are confused).
        rows += detection_rows(d)
    which = "top box per image" if d else "box"
    rows += [
        [f"{which}: mean IoU ({b['positives']} positives)", _num(b["mean_iou"]), ""],
        [f"{which}: share with IoU >= 0.5", _pct(b["iou_at_least_0_5"]), ""],
        [f"{which}: AP50 / AP50:95 (pycocotools)", f"{_num(b['ap50'])} / {_num(b['ap50_95'])}", ""],
    ]
    return rows


def detection_rows(d: dict) -> list[list[str]]:
    """The detector's figures, in the headline and its own section (the CIs say they are
    bootstrapped: the headline's other CIs are Wilson intervals). The mAP row says when the
    figures come from flip test-time augmentation, which changes them."""
    flip = ", flip test-time augmentation" if d.get("test_time_flip") else ""
    return [
        [f"detection mAP50 / mAP50-95 (every box, pycocotools{flip})", f"{_num(d['map50'])} / {_num(d['map50_95'])}", ""],
        ["one-class 'fracture' AP50 (bootstrap CI)", _num(d["one_class_ap50"]), _num_ci(d["one_class_ap50_ci"])],
        ["sensitivity at 1 FP/image (bootstrap CI)", _pct(d["sens_at_1fp"]), _ci(d["sens_at_1fp_ci"])],
    ]


def detection_section(d: dict) -> list[str]:
    """The detector's section: mAP, per-class AP50 with CIs, one-class AP50, FROC, conventions."""
    parts = ["## Detection (every box, original image frame)", markdown_table(["metric", "value", "95% CI"], [
        *detection_rows(d),
        ["images / true boxes / detections", f"{d['images']} / {d['true_boxes']} / {d['detections']}", ""],
    ])]
    rows = [[name, v["n_boxes"], _num(v["ap50"]), _num_ci(v["ci"])] for name, v in d["per_class"].items()]
    parts += ["### Per class", markdown_table(["class", "true boxes", "AP50", "95% CI"], rows)]
    parts += ["### FROC", markdown_table(["FP per image", *d["froc"].keys()], [["sensitivity", *(_pct(v) for v in d["froc"].values())]])]
    parts += ["![precision-recall](detection_pr.png)", "![FROC](froc.png)"]
    parts += ["### Conventions", "\n".join(f"- **{k}**: {v}" for k, v in d["conventions"].items())]
    return parts


def leakage_paragraph(result: dict) -> list[str]:
    """Which split was evaluated (and where it was read from), and what it shares with train:
    Roboflow source groups, exact duplicates and confirmed near duplicates."""
    source = result.get("split_source") or {}
    where = f" (data.yaml: `{source['declared_as']}`, images `{source['images']}`)" if source else ""
    parts = [f"Evaluated split: **{result['split']}** of `{result['data_root']}`{where}."]
    leak = result.get("leakage")
    if leak is None:
        return parts + ["Leakage: not checked (this is the train split)."]
    if leak.get("error"):
        return parts + [f"Leakage: {leak['error']}"]
    shared = sum(leak["groups"]["groups_shared_between_splits"].values())
    exact = len(leak["duplicates"]["exact"])
    near = len(leak["duplicates"]["near"])
    line = (f"Leakage across {result['split']} and train: {shared} shared Roboflow source group(s), "
            f"{exact} exact-duplicate pair(s), {near} confirmed near-duplicate pair(s) "
            "(see metrics.json `leakage`).")
    if shared or exact or near:
        return parts + [f"> **Leakage caveat.** {line} Figures below are likely **optimistic**."]
    return parts + [line]


def render_report(result: dict, class_names, preds, worst_cases: int) -> str:
    c = result["classification"]
    parts = [
        f"# Evaluation: {result['split']} split",
        f"Run `{result['run']}` ({result['model_file']}), data `{result['data_root']}`, {result['images']} images.",
    ]
    parts += leakage_paragraph(result)
    parts += ["## Headline", markdown_table(["metric", "value", "95% CI (Wilson)"], headline_rows(result))]
    undefined = undefined_lines(result)
    if undefined:
        parts.append("Not defined on this split (n/a above and below), and why:\n\n" + "\n".join(undefined))
    rows = []
    auc = result["auc"]["per_class"]
    for name, m in c["per_class"].items():
        rows.append([name, m["support"], _num(m["precision"]), _num(m["recall"]), _ci(m["recall_ci95"]), _num(m["f1"]), _num(auc.get(name))])
    parts += ["## Per class", markdown_table(["class", "support", "precision", "recall", "recall 95% CI", "F1", "AUC"], rows)]
    if c["no_support"]:
        parts.append(f"Classes with no instances in this split (left out of every average): {', '.join(c['no_support'])}.")
    parts += ["![confusion matrix](confusion_matrix.png)", "![ROC](roc.png)"]
    b = result["boxes"]
    ap_rows = [[n, v["instances"], _num(v["ap50"]), _num(v["ap50_95"])] for n, v in b["per_class"].items()]
    parts += ["## Boxes (positives only)",
              "Each image's predicted box is one detection, labelled with its most probable fracture class and scored by that probability.",
              markdown_table(["class", "instances", "AP50", "AP50:95"], ap_rows)]
    if result.get("detection"):
        parts += detection_section(result["detection"])
        misses = result["figures"].get("worst_misses", [])
        if misses:
            parts.append("### Worst misses (true boxes green, top detections red)\n\n" + "\n".join(f"![miss]({f})" for f in misses))
    parts += ["## Calibration", f"ECE {_num(result['calibration']['ece'])} over {len(result['calibration']['bins'])} non-empty bins.",
              "![reliability](reliability.png)"]
    crit = result["critical_errors"]
    parts.append("## Critical errors")
    if crit["pairs"]:
        parts.append(markdown_table(["true", "predicted", "count"], [[p["true"], p["predicted"], p["count"]] for p in crit["pairs"]]))
    else:
        parts.append("No critical (true, predicted) pairs configured (`eval.critical_pairs`).")
    if crit["unknown_pairs"]:
        parts.append(f"Configured pairs naming unknown classes (ignored): {crit['unknown_pairs']}.")
    wrong = np.nonzero(preds.y_true != preds.y_pred)[0]
    wrong = wrong[np.argsort(-preds.probs[wrong].max(axis=1))][:worst_cases]
    if len(wrong):
        parts += ["### Most confident mistakes", markdown_table(
            ["image", "true", "predicted", "confidence"],
            [[Path(preds.samples[i].image_path).name, class_names[preds.y_true[i]], class_names[preds.y_pred[i]],
              f"{preds.probs[i].max():.2f}"] for i in wrong])]
    parts.append("## Grad-CAM")
    for group, files in result["explanations"].items():
        if files:
            parts.append(f"**{group.replace('_', ' ')}**\n\n" + "\n".join(f"![{group}]({f})" for f in files))
    return "\n\n".join(parts) + "\n"
