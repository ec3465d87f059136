"""``python -m klsc_lib.pipeline {cache,train,index,sample} --out DIR [options]`` (also the
``klsc`` console script). Run it as is for one process, or under ``torchrun
--nproc_per_node N [--nnodes M --rdzv-endpoint HOST:PORT]`` for many; every stage
resumes where an earlier run stopped. Options may also come from ``--config FILE.json``
(keys are option names; flags given on the command line win)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from torch.distributed.elastic.multiprocessing.errors import record

from klsc_lib.paper_values import ENERGYDPS
from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.worlds import WORLDS, WorldSpec
from klsc_lib.runtime import atomic_write_text

STAGES = ("cache", "train", "index", "sample")
RECIPE_FLAGS = ("steps", "lr", "k", "expansion", "kernel_size", "warmup_steps", "dead_window")


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated feature ids such as 3,17,42, got {text!r}") from err


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``klsc`` parser and its stage sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("world and run")
    g.add_argument("--world", choices=WORLDS, default="miniworld")
    g.add_argument("--profile", default="smoke", help="mini-world size and transcoder recipe: smoke or default "
                   "(the paper world always uses the paper recipe)")
    g.add_argument("--dinov3-weights", help="paper world: DINOv3 ConvNeXt-L weights file")
    g.add_argument("--prior-weights", help="paper world: guided-diffusion 256x256_diffusion_uncond.pt")
    g.add_argument("--image-folder", help="paper world: ImageNet layout <root>/train/<class>/*, <root>/val/<class>/*")
    g.add_argument("--file-list", help="paper world: training images, one path a line")
    g.add_argument("--eval-file-list", help="paper world: held-out images, one path a line")
    g.add_argument("--hook", help="hooked block (default: the world's, e.g. stages.2.blocks.20)")
    g.add_argument("--out", required=True, type=Path, help="run folder shared by all ranks (a shared file system "
                   "across nodes)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (each rank takes GPU LOCAL_RANK)")
    g.add_argument("--config", type=Path, help="JSON file of option defaults")
    g.add_argument("--timeout-min", type=float, default=30.0, help="a collective waiting longer fails the job")
    g.add_argument("--no-progress", action="store_true")

    parser = argparse.ArgumentParser(prog="klsc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    stages = {}
    stages["cache"] = p = sub.add_parser("cache", parents=[common], help="cache hooked-block activations (train + held-out)")
    p.add_argument("--n-images", type=int, help="training images to cache (default: the recipe's; 0 = all)")
    p.add_argument("--n-eval-images", type=int, help="held-out images (default: the recipe's; 0 = all)")
    p.add_argument("--shard-size", type=int)
    p.add_argument("--batch-size", type=int)

    stages["train"] = p = sub.add_parser("train", parents=[common], help="train the transcoder (DDP over the ranks)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch of images per step")
    p.add_argument("--lr", type=float)
    p.add_argument("--k", type=int, help="TopK per position")
    p.add_argument("--expansion", type=int)
    p.add_argument("--kernel-size", type=int)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--dead-window", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)

    stages["index"] = p = sub.add_parser("index", parents=[common], help="top-k held-out images of every feature / neuron")
    p.add_argument("--top-k", type=int, default=16)
    p.add_argument("--units", choices=("features", "neurons"), default="features")
    p.add_argument("--batch-size", type=int, default=256)

    stages["sample"] = p = sub.add_parser("sample", parents=[common], help="EnergyDPS samples of many features")
    p.add_argument("--features", type=_ids, help="feature ids, e.g. 3,17,42")
    p.add_argument("--random", type=int, help="this many random features that fire on held-out images")
    p.add_argument("--seed", type=int, help="base seed (default 0; 45 with --paper-config)")
    p.add_argument("--n-per-feature", type=int, default=4)
    p.add_argument("--steps", type=int, help="respaced DDPM steps (default 50, GuidanceConfig.fast(); every "
                   "training step with --paper-config)")
    p.add_argument("--paper-config", action="store_true", help="the release's settings (App J.4)")
    p.add_argument("--top-k", type=int, default=16, help="which features index to read (from the index stage)")
    return parser, stages


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options over ``--config`` defaults over built-in defaults."""
    parser, stages = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        return args
    if not args.config.is_file():
        parser.error(f"--config {args.config} does not exist")
    try:
        defaults = {key.replace("-", "_"): value for key, value in json.loads(args.config.read_text()).items()}
    except (json.JSONDecodeError, AttributeError) as err:
        parser.error(f"--config {args.config} must hold a JSON object of option names and values ({err})")
    unknown = sorted(set(defaults) - set(vars(args)) | ({"stage", "config"} & set(defaults)))
    if unknown:
        parser.error(f"--config {args.config}: unknown options {unknown} for stage {args.stage!r}")
    stages[args.stage].set_defaults(**defaults)
    return parser.parse_args(argv)


def world_spec(args: argparse.Namespace) -> WorldSpec:
    return WorldSpec(world=args.world, profile=args.profile, dinov3_weights=args.dinov3_weights,
                     prior_weights=args.prior_weights, image_folder=args.image_folder, file_list=args.file_list,
                     eval_file_list=args.eval_file_list, hook=args.hook)


def recipe(args: argparse.Namespace, **overrides):
    """The transcoder recipe of the world / profile (``klsc_lib.profiles.nb03_sae_training``)
    with ``overrides`` (None values ignored)."""
    from klsc_lib.profiles.nb03_sae_training import PROFILES

    name = "paper" if args.world == "paper" else args.profile
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    return replace(PROFILES[name].recipe, **{f: v for f, v in overrides.items() if v is not None})


def run(args: argparse.Namespace, ranks: D.Ranks) -> dict:
    spec, progress = world_spec(args), not args.no_progress
    if args.stage == "cache":
        from klsc_lib.pipeline.cache import run_cache

        base = recipe(args)
        n, n_eval = (base.n_cache_images if args.n_images is None else args.n_images or None,
                     base.n_eval_images if args.n_eval_images is None else args.n_eval_images or None)
        return run_cache(spec, args.out, ranks, n, n_eval, args.shard_size or base.shard_size,
                         args.batch_size or base.cache_batch_size, progress)
    if args.stage == "train":
        from klsc_lib.pipeline.train import run_train

        given = {f: getattr(args, f) for f in (*RECIPE_FLAGS, "batch_size")}
        return run_train(args.out, ranks, recipe(args, **given), args.seed, args.resume, progress)
    if args.stage == "index":
        from klsc_lib.pipeline.index import run_index

        return run_index(args.out, ranks, args.top_k, args.units, args.batch_size, progress)
    from klsc_lib.diffusion.guidance import GuidanceConfig
    from klsc_lib.pipeline.sample import run_sample

    guidance = GuidanceConfig.paper() if args.paper_config else GuidanceConfig.fast()
    if args.steps is not None:
        guidance = replace(guidance, num_steps=args.steps)
    seed = args.seed if args.seed is not None else (ENERGYDPS["seed"] if args.paper_config else 0)
    return run_sample(spec, args.out, ranks, guidance, seed, args.n_per_feature, args.top_k, args.features,
                      args.random, progress)


@record
def main(argv: Sequence[str] | None = None) -> int:
    """Parse, join the process group, run the stage, log its summary to ``OUT/logs/STAGE.json``;
    0 on success (a failure raises, so the process exits non-zero and torchrun stops the others)."""
    args = parse_args(argv)
    ranks = D.init(args.device, args.timeout_min)
    try:
        result = run(args, ranks)
    except Exception as err:
        print(f"klsc {args.stage}: rank {ranks.rank} of {ranks.world_size} failed: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)
        raise
    if ranks.is_primary:
        summary = {"stage": args.stage, "world_size": ranks.world_size, "device": str(ranks.device), **result}
        atomic_write_text(args.out / "logs" / f"{args.stage}.json", json.dumps(summary, indent=2, default=str) + "\n")
    D.barrier()
    D.shutdown(ranks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
