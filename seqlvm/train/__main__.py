"""Worker entry point under torchrun: ``python -m seqlvm.train RUN/config.toml [--resume]``.

``seqlvm train --nproc N`` writes the resolved config and launches this in N processes; on
several machines run the same line through ``torchrun`` yourself (see README). Exit codes:
0 done, 1 the loss went non-finite, 2 a bad config, data set or file (one line on stderr), 130
interrupted (checkpoint saved, resume with --resume).
"""

from __future__ import annotations

import argparse
import os
import sys

from seqlvm.train.config import TrainConfig
from seqlvm.train.run import train
from seqlvm.train.trainer import NonFiniteLossError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlvm.train", description=__doc__)
    parser.add_argument("config", help="a TrainConfig TOML file")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/ckpt/last.pt")
    args = parser.parse_args()
    main_process = os.environ.get("RANK", "0") == "0"
    try:
        result = train(TrainConfig.from_toml(args.config), resume=args.resume)
    except NonFiniteLossError as err:
        if main_process:
            print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as err:  # bad config, data or files: one line, as the CLI
        if main_process:
            print(f"error: {err}", file=sys.stderr)
        return 2
    if main_process:
        print(f"{result.reason} at step {result.step} (epoch {result.epoch}); run folder {result.run_dir}")
    return 130 if result.reason == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
