"""``python -m klsc_lib.worlds.miniworld [--profile default] [--rebuild] [--ship]``: load a
mini-world (shipped weights, else the cache, else built now) and print its quality
metrics (``make miniworld``). ``--rebuild`` ignores the shipped weights and the cached
ones and trains again; ``--ship`` writes the world into the package's shipped weights
(``make miniworld REBUILD=1`` does both)."""

from __future__ import annotations

import argparse
import json
import time

from klsc_lib.worlds.miniworld import MINIWORLD
from klsc_lib.worlds.miniworld.build import clear_built, load_miniworld, ship_world, world_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(MINIWORLD), default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rebuild", action="store_true", help="retrain, ignoring shipped and cached weights")
    parser.add_argument("--ship", action="store_true", help="write the world into the package's shipped weights")
    args = parser.parse_args()
    cfg = MINIWORLD[args.profile]
    start = time.perf_counter()
    if args.rebuild:
        clear_built(cfg)
    world = load_miniworld(cfg, device=args.device, use_shipped=not (args.rebuild or args.ship))
    if args.ship:
        print(f"shipped into {ship_world(cfg, world)}")
    numbers = {k: v for k, v in world.quality.items() if not hasattr(v, "shape")}
    print(json.dumps(numbers, indent=2))
    source = "shipped weights" if world.quality["shipped"] else "cache hit" if world.quality["cache_hit"] else "built"
    print(f"{cfg.name}: {source} in {time.perf_counter() - start:.0f} s; cache folder {world_folder(cfg)}")


if __name__ == "__main__":
    main()
