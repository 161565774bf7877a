"""The ``refinegan`` command: parse arguments, set up logging, call one library function.

Every stage takes ``--config`` (YAML; defaults from the schema when omitted) and any number of
``--set section.key=value`` overrides, parsed as YAML scalars and validated like the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import OutputWriteError, RefineganError

logger = logging.getLogger("refinegan")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config (default: the schema defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=200 (repeatable)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinegan", description="SimGAN refinement of simulated galaxy postage stamps"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="stage", required=True)
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser

    p = sub.add_parser("simulate", help="draw simulated stamps with GalSim")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output stamp file (.h5)")
    p.add_argument("--shard", type=int, default=0, help="shard index i in [0, nshards)")
    p.add_argument("--nshards", type=int, default=1, help="number of shards S")

    p = sub.add_parser("prepare-real", help="build the real (target) stamp file")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output stamp file (.h5)")

    p = sub.add_parser("prepare-twin",
                       help="build the paired twin target: the mock drawn on the sims' galaxies")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output stamp file (.h5)")

    p = sub.add_parser("train", help="train the SimGAN refiner")
    _add_config_args(p)
    p.add_argument("--sim", nargs="+", required=True, help="simulated stamp file(s)")
    p.add_argument("--real", required=True, help="real (target) stamp file")
    p.add_argument("--out", required=True, help="output directory (refiner.pt, train_log.h5, samples/)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--resume-if-matches", action="store_true",
                   help="continue from the checkpoint in --out if it is this run's, else train afresh")

    p = sub.add_parser("refine", help="refine simulated stamps with a trained refiner")
    p.add_argument("--model", required=True, help="refiner checkpoint (refiner.pt)")
    p.add_argument("--in", dest="in_path", required=True, help="input stamp file")
    p.add_argument("--out", required=True, help="output stamp file")
    p.add_argument("--chunk", type=int, default=1024, help="stamps per chunk (memory bound)")

    p = sub.add_parser("compare", help="compare sim, refined and real statistics")
    _add_config_args(p)
    p.add_argument("--sim", nargs="+", required=True, help="simulated stamp file(s)")
    p.add_argument("--refined", nargs="+", required=True, help="refined stamp file(s)")
    p.add_argument("--real", required=True, help="real (target) stamp file")
    p.add_argument("--out", required=True, help="output compare.h5")
    p.add_argument("--plots", default=None, help="directory for PNG plots (default: beside --out)")
    p.add_argument("--control", nargs="+", default=None,
                   help="noise-only control stamp file(s): the target with only its noise effect")
    p.add_argument("--twin", default=None,
                   help="paired twin stamp file (refinegan prepare-twin): m_refined - m_twin paired")
    p = sub.add_parser("summary", help="key numbers of a compare.h5 as an HTML page")
    p.add_argument("--compare", required=True, help="compare.h5 written by refinegan compare")
    p.add_argument("--out", required=True, help="output HTML file")
    return parser


def _run(args: argparse.Namespace) -> None:
    from .config import load_config

    progress = not args.no_progress
    if args.stage == "refine":
        from .refiner.refine import refine

        refine(args.model, args.in_path, args.out, chunk_stamps=args.chunk, progress=progress)
        return
    if args.stage == "summary":
        from .compare.summary import write_summary

        write_summary(args.compare, args.out)
        return
    config = load_config(args.config, args.overrides)
    if args.stage == "simulate":
        from .sim.simulate import simulate

        simulate(config, args.out, shard=args.shard, nshards=args.nshards, progress=progress)
    elif args.stage == "prepare-real":
        from .target.prepare_real import prepare_real

        prepare_real(config, args.out, progress=progress)
    elif args.stage == "prepare-twin":
        from .target.twin import prepare_twin

        prepare_twin(config, args.out, progress=progress)
    elif args.stage == "train":
        from .refiner.train import train

        resume = "if_matches" if args.resume_if_matches else args.resume
        train(config, args.sim, args.real, args.out, resume=resume, progress=progress)
    elif args.stage == "compare":
        from .compare.compare import compare

        compare(config, args.sim, args.refined, args.real, args.out, plots_dir=args.plots,
                progress=progress, control_paths=args.control, twin_path=args.twin)


EXIT_INPUT = 2  # the input or config was refused (RefineganError), nothing written
EXIT_FAILED = 1  # anything else went wrong (a file system error, an error inside a library)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Run one stage; returns the exit code. Errors are one log line (the traceback with -v)."""
    args = _build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)  # default INFO, -v DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hint = "" if args.verbose else " (run with -v for the traceback)"
    try:
        _run(args)
    except OutputWriteError as err:  # a full disk or a size limit; the partial file is gone
        logger.error("%s: %s", err.filename, err.strerror, exc_info=bool(args.verbose))
        # HDF5 can crash in its exit handlers after a failed write: leave without running them
        logging.shutdown()
        os._exit(EXIT_FAILED)
    except RefineganError as err:
        logger.error("%s", err, exc_info=bool(args.verbose))
        return EXIT_INPUT
    except KeyboardInterrupt:
        logger.error("interrupted: no output was written under its final name")
        return EXIT_INTERRUPTED
    except OSError as err:  # file system: permissions, full disk, a directory where a file goes
        where = f"{err.filename}: " if err.filename else ""
        logger.error("%s%s%s", where, err.strerror or err, hint, exc_info=bool(args.verbose))
        return EXIT_FAILED
    except Exception as err:  # raised inside torch, GalSim, h5py...: say what and where
        logger.error("%s in refinegan %s: %s%s", type(err).__name__, args.stage, err, hint,
                     exc_info=bool(args.verbose))
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
