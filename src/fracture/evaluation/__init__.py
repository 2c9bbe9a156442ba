"""Honest evaluation: metrics with confidence intervals, screening view, boxes, calibration, Grad-CAM."""
