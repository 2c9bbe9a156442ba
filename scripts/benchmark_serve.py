"""Load benchmark: python scripts/benchmark_serve.py image=<file> [url=...] [clients=8] [seconds=60]

N concurrent clients POST the image to a running server's /v1/predict for T seconds, then
p50, p95, p99, throughput and errors are printed (fracture.serving.benchmark).
"""

import json
import sys
import urllib.request
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fracture.cli import fail
from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark_serve")
def main(cfg: DictConfig) -> None:
    from fracture.runs import write_json
    from fracture.serving.benchmark import run_load

    image = Path(cfg.image)
    if not image.is_file():
        fail(f"image {image} not found")
    try:
        with urllib.request.urlopen(f"{cfg.url}/ready", timeout=10) as r:
            json.load(r)
    except Exception as exc:  # noqa: BLE001 - any failure: the server is not there or not ready
        fail(f"{cfg.url}/ready does not say yes ({exc}): start scripts/serve.py first")
    print(f"{cfg.clients} clients x {cfg.seconds} s -> {cfg.url}/v1/predict ({image.name}, {image.stat().st_size} bytes)")
    summary = run_load(cfg.url, image.read_bytes(), cfg.clients, cfg.seconds).summary()
    print(f"requests {summary['requests']}  errors {summary['errors']} {summary['error_kinds'] or ''}")
    print(f"p50 {summary['p50_ms']} ms  p95 {summary['p95_ms']} ms  p99 {summary['p99_ms']} ms  max {summary['max_ms']} ms")
    print(f"throughput {summary['throughput_rps']} req/s  p95/p50 {summary['p95_over_p50']}")
    if cfg.out:
        write_json(cfg.out, summary)
    if summary["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
