"""``lexprobe`` command line: extract, organism train/check, analyse."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from lexprobe.paths import home, results_dir


def _extract(args: argparse.Namespace) -> int:
    from lexprobe.stimuli import load_stimuli
    from lexprobe.specs import resolve
    from lexprobe.suites import parse_steps
    from lexprobe.sweep import extract

    stimuli = load_stimuli(args.stimuli)  # before resolving the suite: a bad file fails before any training
    suite = resolve(args.suite)
    steps = parse_steps(args.steps, suite.steps)
    models = tuple(args.models.split(",")) if args.models else None
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    status = extract(suite, stimuli, steps, models, seeds, root=args.out, config=_engine_config(args),
                     scheduler=args.scheduler, evict=args.evict)
    counts = status["status"].value_counts().to_dict()
    print(f"{len(status)} checkpoints: {counts}; results in {args.out or results_dir()}")
    for r in status.query("status == 'skipped'").itertuples():
        print(f"  skipped {r.model} seed{r.seed} step{r.step}: {r.reason}")
    return 0


def _engine_config(args: argparse.Namespace) -> "ExtractConfig":
    from lexprobe.extract import ExtractConfig

    return ExtractConfig(batch_size=args.batch_size, save_embeddings=not args.no_embeddings, dtype=args.dtype,
                         device=args.device)


def _plan(args: argparse.Namespace) -> int:
    from lexprobe.plan import plan
    from lexprobe.stimuli import load_stimuli
    from lexprobe.suites import parse_steps, resolve_suite

    stimuli = load_stimuli(args.stimuli)
    suite = resolve_suite(args.suite)
    print(plan(suite, stimuli, parse_steps(args.steps, suite.steps), _engine_config(args), root=args.out,
               bandwidth_mb_s=args.bandwidth))
    return 0


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-embeddings", action="store_true", help="do not store per-sentence embeddings")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="where checkpoints run; auto picks a GPU when torch sees one (default %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="weight dtype; part of the results' fingerprint (default %(default)s)")


def _organism_train(args: argparse.Namespace) -> int:
    from lexprobe.organism.suite import ensure_trained

    suite = ensure_trained(args.profile, progress=True)
    print(f"organism suite {suite.name}: {len(suite.seeds)} seeds x {len(suite.steps)} checkpoints in {suite.cache_dir}")
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from lexprobe.report import report

    print(report(args.suite, args.stimuli, root=args.out, steps=args.steps))
    return 0


def _report_path(out: str | None, suite_name: str) -> str:
    return out or str(home() / f"report-{suite_name}.html")


def _run(args: argparse.Namespace) -> int:
    """Main job: train (or reuse) the organism, extract on it (cached), print the stage 1-2 summary, then run (or
    reuse) stages 3-5 and write the HTML supplement."""
    from lexprobe.organism.suite import ensure_trained
    from lexprobe.report import summary
    from lexprobe.stages import inflection_stage
    from lexprobe.stimuli import load_stimuli
    from lexprobe.supplement import write_report

    stimuli = load_stimuli(args.stimuli)  # fail on bad stimuli before training
    suite = ensure_trained(args.profile, progress=True)
    s1 = inflection_stage(suite, stimuli, root=args.out, progress=True)
    print(summary(s1, root=args.out), flush=True)
    if args.no_report:
        return 0
    path = write_report(s1, _report_path(args.report, suite.name), root=args.out, command=_command(args))
    print(f"\nreport (all five stages, one self-contained HTML file, {path.stat().st_size / 1e6:.1f} MB): {path}")
    return 0


def _command(args: argparse.Namespace) -> str:
    return shlex.join(["lexprobe", *args.argv])


def _report(args: argparse.Namespace) -> int:
    from lexprobe.specs import resolve
    from lexprobe.stimuli import load_stimuli
    from lexprobe.supplement import write_report

    stimuli = load_stimuli(args.stimuli)
    suite = resolve(args.suite)
    path = write_report(suite, _report_path(args.out, suite.name), stimuli, args.steps, root=args.results,
                        command=_command(args), n_random=args.n_random)
    print(f"report ({path.stat().st_size / 1e6:.1f} MB): {path}")
    return 0


def _replicate(args: argparse.Namespace) -> int:
    from lexprobe.ablation import causal_stage
    from lexprobe.replication import replication_report, seed_stage
    from lexprobe.stages import head_stage, inflection_stage
    from lexprobe.stimuli import load_stimuli

    stimuli = load_stimuli(args.stimuli)  # before resolving the suite: a bad file fails before any training
    s1 = inflection_stage(args.suite, stimuli, args.steps, root=args.out)
    s2 = head_stage(s1, root=args.out)
    s4 = None if args.no_causal else causal_stage(s1, s2, n_random=args.n_random, root=args.out)
    print(replication_report(seed_stage(s1, s2, s4, n_perm=args.n_perm)))
    return 0


def _perturb(args: argparse.Namespace) -> int:
    from lexprobe.robustness import perturbation_stage, robustness_report
    from lexprobe.stages import head_stage, inflection_stage

    s1 = inflection_stage(args.suite, args.stimuli, args.steps, root=args.out)
    print(robustness_report(perturbation_stage(s1, head_stage(s1, root=args.out), root=args.out)))
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from lexprobe.ablation import causal_report, causal_stage
    from lexprobe.stages import head_stage, inflection_stage

    s1 = inflection_stage(args.suite, args.stimuli, args.steps, root=args.out)
    s2 = head_stage(s1, root=args.out)
    s4 = causal_stage(s1, s2, n_random=args.n_random, n_random_dev=args.n_random_dev,
                      layer_matched=args.layer_matched, map_steps=args.map_steps, root=args.out)
    print(causal_report(s4, s1.inflection))
    return 0


def _stage_args(p: argparse.ArgumentParser, default_suite: str, steps_help: str = "as for extract",
                suite_help: str = "suite spec, as for extract (default %(default)s)") -> None:
    """The arguments every stage command shares: --suite, --stimuli, --steps."""
    p.add_argument("--suite", default=default_suite, help=suite_help)
    p.add_argument("--stimuli", default="lexprobe_nouns")
    p.add_argument("--steps", default="all", help=steps_help)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lexprobe", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    default_suite = "organism"  # LEXPROBE_SMOKE=1 makes this the smoke profile

    e = sub.add_parser("extract", help="measure a suite's checkpoints on a stimulus set (resumable)")
    e.add_argument("--suite", default=default_suite,
                   help="organism | pythia-14m | pythia-70m-deduped | pythia-14m:seeds=0-9 | local:PATH | "
                        "hubcache:PATH:ORG/NAME (default %(default)s)")
    e.add_argument("--steps", default="all", help="all | rivtrott | last | log:N | first:N | 0,1,512")
    e.add_argument("--stimuli", default="lexprobe_nouns", help="shipped set name or a CSV in RAW-C schema")
    e.add_argument("--models", help="comma list of model sizes (default: all of the suite's)")
    e.add_argument("--seeds", help="comma list of seeds (default: all of the suite's)")
    e.add_argument("--out", help="results folder (default: $LEXPROBE_HOME/results)")
    _engine_flags(e)
    e.add_argument("--scheduler", default="serial",
                   help="serial (next checkpoint loads while this one is measured) | dask (a local cluster, one "
                        "worker per core) | dask:ADDRESS (a running scheduler, e.g. tcp://host:8786)")
    e.add_argument("--evict", action="store_true",
                   help="delete each hub revision's downloaded files once its results are stored (never files "
                        "that were in the cache before)")
    e.set_defaults(func=_extract)

    pl = sub.add_parser("plan", help="what an extract will cost (units, download, results disk, time), offline")
    pl.add_argument("--suite", default=default_suite, help="suite spec, as for extract (default %(default)s)")
    pl.add_argument("--steps", default="all", help="as for extract")
    pl.add_argument("--stimuli", default="lexprobe_nouns")
    pl.add_argument("--out", help="results folder (finished units are not counted again)")
    pl.add_argument("--bandwidth", type=float, default=50.0, help="assumed download speed in MB/s (default 50)")
    _engine_flags(pl)
    pl.set_defaults(func=_plan)

    o = sub.add_parser("organism", help="the offline developmental model organism")
    osub = o.add_subparsers(dest="organism_command", required=True)
    t = osub.add_parser("train", help="train (or reuse) the organism suite")
    t.add_argument("--profile", default=None, help="default | smoke (LEXPROBE_SMOKE=1 picks smoke)")
    t.set_defaults(func=_organism_train)

    a = sub.add_parser("analyse", help="stage 1-2 summary (inflection, heads); measures missing checkpoints first")
    _stage_args(a, default_suite, "as for extract; checkpoints not yet stored are measured first")
    a.add_argument("--out", help="results folder")
    a.set_defaults(func=_analyse)

    q = sub.add_parser("perturb", help="stage 3: perturbed stimuli (cue separated, reframed, neutral) across steps")
    _stage_args(q, default_suite)
    q.add_argument("--out", help="results folder")
    q.set_defaults(func=_perturb)

    b = sub.add_parser("ablate", help="stage 4: ablate discovered heads vs random head sets; causal head map")
    _stage_args(b, default_suite)
    b.add_argument("--n-random", type=int, default=None,
                   help="random head sets (and random edge sets) in each null (default 100; smoke 5)")
    b.add_argument("--n-random-dev", type=int, default=None, help="random head sets at every checkpoint (default 10)")
    b.add_argument("--map-steps", type=int, default=None, help="log-spaced checkpoints for the single-head map")
    b.add_argument("--layer-matched", action="store_true", help="random sets match the discovered heads' layers")
    b.add_argument("--out", help="results folder")
    b.set_defaults(func=_ablate)

    r = sub.add_parser("run", help="main job: train/reuse the organism, extract, summarise, write the HTML report")
    r.add_argument("--profile", default=None, help="default | smoke (LEXPROBE_SMOKE=1 picks smoke)")
    r.add_argument("--stimuli", default="lexprobe_nouns")
    r.add_argument("--out", help="results folder")
    r.add_argument("--report", help="HTML report path (default: $LEXPROBE_HOME/report-SUITE.html)")
    r.add_argument("--no-report", action="store_true", help="stop after the stage 1-2 summary (no stages 3-5)")
    r.set_defaults(func=_run)

    h = sub.add_parser("report", help="all five stages (run or reused) in one self-contained HTML file")
    _stage_args(h, default_suite)
    h.add_argument("--out", help="HTML file to write (default: $LEXPROBE_HOME/report-SUITE.html)")
    h.add_argument("--results", help="results folder (default: $LEXPROBE_HOME/results)")
    h.add_argument("--n-random", type=int, default=None, help="stage 4 random sets per null (default 100; smoke 5)")
    h.set_defaults(func=_report)

    s = sub.add_parser("replicate", help="stage 5: seed agreement of inflections, mixed model, heads, ablations")
    _stage_args(s, default_suite, suite_help="suite spec with >= 2 seeds (default %(default)s)")
    s.add_argument("--n-perm", type=int, default=2000, help="permutations of the head-agreement nulls")
    s.add_argument("--n-random", type=int, default=None, help="stage 4 random sets per null (default 100; smoke 5)")
    s.add_argument("--no-causal", action="store_true", help="leave out the stage-4 ablation effects per seed")
    s.add_argument("--out", help="results folder")
    s.set_defaults(func=_replicate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"lexprobe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
