"""Write the synthetic dataset: python scripts/make_synthetic.py [data.root=DIR] [data.synthetic.per_class=N]

`data=synthetic` in any other script does this automatically on first use.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fracture.env import setup_env

setup_env(Path(__file__).resolve().parents[1])


@hydra.main(version_base="1.3", config_path="../conf", config_name="make_synthetic")
def main(cfg: DictConfig) -> None:
    from fracture.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(**OmegaConf.to_container(cfg.data.synthetic, resolve=True))
    root = generate(cfg.data.root, spec)
    print(f"Synthetic dataset written to {root}")


if __name__ == "__main__":
    main()
