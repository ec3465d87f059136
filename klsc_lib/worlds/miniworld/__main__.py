"""``python -m klsc_lib.worlds.miniworld [--profile default]``: build (or load from the cache)
a mini-world and print its quality metrics and cache folder (``make miniworld``)."""

from __future__ import annotations

import argparse
import json
import time

from klsc_lib.worlds.miniworld import MINIWORLD
from klsc_lib.worlds.miniworld.build import world_folder
from klsc_lib.worlds import load_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(MINIWORLD), default="default")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cfg = MINIWORLD[args.profile]
    start = time.perf_counter()
    world = load_world(cfg, device=args.device)
    numbers = {k: v for k, v in world.quality.items() if not hasattr(v, "shape")}
    print(json.dumps(numbers, indent=2))
    print(f"{cfg.name}: {'cache hit' if world.quality['cache_hit'] else 'built'} in "
          f"{time.perf_counter() - start:.0f} s; cache folder {world_folder(cfg)}")


if __name__ == "__main__":
    main()
