"""Serve a trained run: python scripts/serve.py run=<run dir> [serve.port=8000]

The page at http://127.0.0.1:8000/, the API at /health, /ready, /v1/model, /v1/predict
(fracture.serving). Needs the serve extra: pip install -e ".[serve]".
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    try:
        import uvicorn

        from fracture.serving.app import create_app
        from fracture.serving.settings import ServeSettings
    except ImportError as exc:
        fail(f"{exc.name} is missing: install the serve extra (pip install -e \".[serve]\")")
    from fracture.runs import RunError, load_run

    try:
        settings = ServeSettings.from_mapping(OmegaConf.to_container(cfg.serve, resolve=True))
        run = load_run(cfg.run, model_file=cfg.model_file, test_time_flip=cfg.test_time_flip)
    except (RunError, ValueError) as exc:
        fail(exc)
    app = create_app(run, settings)
    print(f"serving {run.run_dir} ({cfg.model_file}) at http://{settings.host}:{settings.port}/  (Ctrl-C stops)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=cfg.log_level)


if __name__ == "__main__":
    main()
