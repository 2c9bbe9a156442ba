"""Serving a trained run over HTTP: `create_app(run, settings)` (fracture.serving.app).

Sits above `fracture.inference` and reuses its decode and batch-prediction functions;
nothing below this package imports it.
"""
