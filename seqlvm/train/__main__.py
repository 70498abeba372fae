"""Worker entry point under torchrun: ``python -m seqlvm.train RUN/config.toml [--resume]``.

``seqlvm train --nproc N`` writes the resolved config and launches this in N processes; on
several machines run the same line through ``torchrun`` yourself (see README).
"""

from __future__ import annotations

import argparse

from seqlvm.train.config import TrainConfig
from seqlvm.train.run import train


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m seqlvm.train", description=__doc__)
    parser.add_argument("config", help="a TrainConfig TOML file")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/ckpt/last.pt")
    args = parser.parse_args()
    train(TrainConfig.from_toml(args.config), resume=args.resume)


if __name__ == "__main__":
    main()
