"""``lexprobe`` command line: extract, plan, store migrate, organism train, the five stages (inflection, heads,
perturbation, causal, seeds), report, run, validate. ``--out`` is the results folder in every command (``--html`` the
report file)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from typing import TYPE_CHECKING

from lexprobe.base.families import FAMILIES
from lexprobe.base.paths import home, results_dir

if TYPE_CHECKING:
    from lexprobe.base.view import View
    from lexprobe.engine.extract import ExtractConfig
    from lexprobe.study import Study


def _extract(args: argparse.Namespace) -> int:
    from lexprobe.checkpoints.suites import parse_steps
    from lexprobe.organism.suite import resolve
    from lexprobe.stimuli.tables import load_stimuli
    from lexprobe.sweep.run import extract

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


def _engine_config(args: argparse.Namespace) -> ExtractConfig:
    from lexprobe.engine.extract import ExtractConfig

    return ExtractConfig(batch_size=args.batch_size, save_embeddings=not args.no_embeddings, dtype=args.dtype,
                         device=args.device)


def _plan(args: argparse.Namespace) -> int:
    """Plan a sweep and a study offline; an organism that is not trained yet is planned from its profile's shape,
    never trained for it."""
    from lexprobe.checkpoints.suites import parse_steps
    from lexprobe.organism.suite import planned
    from lexprobe.plan import plan, study_plan
    from lexprobe.stimuli.tables import load_stimuli
    from lexprobe.study import Study

    stimuli = load_stimuli(args.stimuli)
    suite, shape = planned(args.suite)
    if shape is not None:
        print(f"suite {suite.name} is not trained yet: planned from its profile's shape (nothing is trained for a "
              "plan)")
    if "listed_from" in suite.metadata:
        left = suite.metadata.get("left_out", {})
        print(f"revisions: {len(suite.steps)} steps per seed from the {suite.metadata['listed_from']}"
              + (f"; {len(left)} names left out (see the suite's metadata)" if left else ""))
    print(plan(suite, stimuli, parse_steps(args.steps, suite.steps), _engine_config(args), root=args.out,
               bandwidth_mb_s=args.bandwidth, shape=shape))
    study = Study(suite, stimuli, args.steps, root=args.out, device=args.device, dtype=args.dtype,
                  batch_size=args.batch_size, progress=False)
    print(study_plan(study, args.assume_heads, shape))
    return 0


def _store_migrate(args: argparse.Namespace) -> int:
    from lexprobe.store.migrate import migrate

    root = args.root or results_dir()
    counts = migrate(root)
    print(f"packed {counts['conditions']} conditions of {counts['checkpoints']} checkpoints "
          f"({counts['skipped']} skipped records) under {root}")
    return 0


def _engine_flags(p: argparse.ArgumentParser) -> None:
    """The engine's flags of ``extract`` and ``plan`` (the stage commands take the study's)."""
    p.add_argument("--batch-size", type=int, default=None,
                   help="sentences per forward pass (default: as many as keep one pass's activations under 32 MiB)")
    p.add_argument("--no-embeddings", action="store_true", help="do not store per-sentence embeddings")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="where checkpoints run; auto picks a GPU when torch sees one (default %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="weight dtype; part of the results' fingerprint (default %(default)s)")


def _organism(profile: str | None, arch: str | None) -> str:
    """The organism spec of a ``--profile`` and an ``--arch``: ``organism[-PROFILE][:arch=ARCH]``."""
    return f"organism{'-' + profile if profile else ''}{':arch=' + arch if arch else ''}"


def _organism_train(args: argparse.Namespace) -> int:
    from lexprobe.organism.suite import ensure_trained, organism_profile

    suite = ensure_trained(organism_profile(_organism(args.profile, args.arch)), progress=True)
    print(f"organism suite {suite.name}: {len(suite.seeds)} seeds x {len(suite.steps)} checkpoints "
          f"in {suite.cache_dir}")
    return 0


def _study(args: argparse.Namespace, suite: str | None = None) -> Study:
    """The study the flags describe: every setting given on the command line; the rest take the study's defaults."""
    from dataclasses import fields

    from lexprobe.study import Study

    given = {f.name: getattr(args, f.name) for f in fields(Study) if getattr(args, f.name, None) is not None}
    return Study(**{**given, **({"suite": suite} if suite else {})})


def _show(view: View) -> None:
    """Print a stage's view as text."""
    from lexprobe.views.text import render_text

    print(render_text(view), flush=True)


def _stage(args: argparse.Namespace) -> int:
    """A stage's command: its view (the stage run, or read from the stage cache, with the stages it needs)."""
    from lexprobe.report import view

    _show(view(_study(args), args.stage))
    return 0


def _html_path(html: str | None, suite_name: str) -> str:
    return html or str(home() / f"report-{suite_name}.html")


def _write_report(study: Study, args: argparse.Namespace) -> None:
    from lexprobe.supplement import write_report

    path = write_report(study, _html_path(args.html, study.checkpoint_suite.name), command=_command(args))
    print(f"report (all five stages, one self-contained HTML file, {path.stat().st_size / 1e6:.1f} MB): {path}")


def _report(args: argparse.Namespace) -> int:
    _write_report(_study(args), args)
    return 0


def _run(args: argparse.Namespace) -> int:
    """Main job: train (or reuse) the organism, extract on it (cached), print the stage 1-2 reports, then run (or
    reuse) stages 3-5 and write the HTML supplement."""
    from lexprobe.report import view
    from lexprobe.stages.registry import Skipped

    study = _study(args, _organism(args.profile, args.arch))
    _show(view(study, "inflection"))
    print()
    _show(view(study, "discovery"))  # e.g. fewer checkpoints than head discovery needs: stage 1 still stands
    if isinstance(study.outcome("discovery"), Skipped):
        return 0
    if not args.no_report:
        print()
        started, stages = time.perf_counter(), _seconds(study.timings)
        _write_report(study, args)  # runs (or reads) stages 3-5 first: their time is theirs, not the report's
        own = time.perf_counter() - started - (_seconds(study.timings) - stages)
        study.timings["report"] = {"seconds": own, "cached": None}
    print(timing_line(study.timings))
    return 0


def _seconds(timings: dict[str, dict]) -> float:
    return sum(t["seconds"] for t in timings.values())


def timing_line(timings: dict[str, dict]) -> str:
    """One line of where a run's wall time went: each part's seconds, and whether it came from the stage cache."""
    parts = [f"{name} {t['seconds']:.1f} s{' (cached)' if t['cached'] else ''}" for name, t in timings.items()]
    return f"time per part: {', '.join(parts)}; total {_seconds(timings):.1f} s"


def _validation(args: argparse.Namespace) -> int:
    """Train (or reuse) the planted organism, run stages 1, 2 and 4 on it and print the construct check and the
    validity table; ``--html`` also writes its supplement (all five stages, with the validation section)."""
    from lexprobe.report import view

    if args.rules:
        return _rules(args)
    study = _study(args, _organism(args.profile, args.arch))
    _show(view(study, "validation"))
    if args.html:
        _write_report(study, args)
    return 0


def _rules(args: argparse.Namespace) -> int:
    """Every head-finding method scored on every planted profile (each validated first: trained, or read from the
    cache), with the two decisions of protocol 3 (docs/validation.md): stage 2's default rule, and the method the
    report's "which heads" findings quote, each chosen on the first ``--choose`` seeds of each profile and
    confirmed on the others."""
    import pandas as pd

    from lexprobe.analysis.detection import RULE_TITLES, choose_and_confirm
    from lexprobe.organism.profiles import PLANTED_PROFILES
    from lexprobe.stages.validation import CANDIDATES

    more = f":seeds={args.seeds}" if args.seeds else ""
    profiles = args.profiles.split(",") if args.profiles else PLANTED_PROFILES
    unknown = sorted(set(profiles) - set(PLANTED_PROFILES))
    if unknown:
        raise ValueError(f"--profiles {','.join(unknown)}: choose among {','.join(PLANTED_PROFILES)}")
    if set(profiles) != set(PLANTED_PROFILES):
        print(f"a subset of the planted profiles ({', '.join(profiles)}): protocol 3 fixes all of them")
    units = pd.concat([_study(args, _organism(name, args.arch) + more).validation.methods.assign(profile=name)
                       for name in profiles], ignore_index=True)
    table, rule = choose_and_confirm(units, n_choose=args.choose, candidates=tuple(RULE_TITLES.values()))
    _, method = choose_and_confirm(units, n_choose=args.choose, candidates=CANDIDATES)
    shown = ["rule", "units", "planted", "found", "true_positives", "decoys", "decoys_found"] + [
        f"{k}{e}" for k in ("precision", "recall", "f1", "decoy_fpr", "auroc", "f1_minus_default")
        for e in ("", "_low", "_high")]
    with pd.option_context("display.width", 400, "display.max_columns", 40, "display.float_format", "{:.2f}".format):
        for split, g in table.groupby("split", sort=False):
            print(f"\n{split}: seeds {g['seeds'].iloc[0]}")
            print(g[[c for c in shown if c in g.columns]].to_string(index=False))
    print(f"\ndecision 1 (stage 2's default rule): {rule}")
    print(f"decision 2 (the method the report quotes): {method}")
    if args.write:
        from lexprobe.analysis.groundtruth import write_scores

        path = write_scores(table, {"stage 2 default": rule, "report method": method}, _command(args))
        print(f"wrote {path} (the scores the stage 2 and 4 findings quote)")
    return 0


def _command(args: argparse.Namespace) -> str:
    return shlex.join(["lexprobe", *args.argv])


def _study_args(p: argparse.ArgumentParser, suite: bool = True) -> None:
    """The flags every stage command shares: one per :class:`lexprobe.Study` setting that has a help text, with its
    default (and smoke default) from the study (``suite=False``: the command picks the suite itself)."""
    from dataclasses import fields

    from lexprobe.study import Study

    for f in fields(Study):
        text = f.metadata.get("help")
        if text is None or (f.name == "suite" and not suite):
            continue
        if f.default is not None and not isinstance(f.default, bool):
            shown = ",".join(f.default) if isinstance(f.default, tuple) else f.default
            smoke = f.metadata.get("smoke")
            text += f" (default {shown}{'' if smoke is None else f'; smoke {smoke}'})"
        kw: dict = {"dest": f.name, "default": None, "help": text}
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        elif isinstance(f.default, tuple):
            kw["type"] = lambda s: tuple(s.split(","))
        elif isinstance(f.default, int) or f.metadata.get("type") is int:
            kw["type"] = int
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        p.add_argument(f.metadata.get("flag") or "--" + f.name.replace("_", "-"), **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lexprobe", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    default_suite = "organism"  # LEXPROBE_SMOKE=1 makes this the smoke profile
    from lexprobe.organism.suite import suite_help

    e = sub.add_parser("extract", help="measure a suite's checkpoints on a stimulus set (resumable)")
    e.add_argument("--suite", default=default_suite, help=f"{suite_help()} (default %(default)s)")
    e.add_argument("--steps", default="all", help="all | rivtrott | last | log:N | first:N | 0,1,512")
    e.add_argument("--stimuli", default="lexprobe_nouns", help="shipped set name or a CSV in RAW-C schema")
    e.add_argument("--models", help="comma list of model sizes (default: all of the suite's)")
    e.add_argument("--seeds", help="comma list of seeds (default: all of the suite's)")
    e.add_argument("--out", help="results folder (default: $LEXPROBE_HOME/results)")
    _engine_flags(e)
    e.add_argument("--scheduler", default="auto",
                   help="auto (pool on several cores, else serial) | pool (single-threaded worker processes, "
                        "LEXPROBE_WORKERS of them, default one per core) | serial (next checkpoint loads while this "
                        "one is measured) | dask (a local cluster, one worker per core) | dask:ADDRESS (a running "
                        "scheduler, e.g. tcp://host:8786)")
    e.add_argument("--evict", action="store_true",
                   help="delete each hub revision's downloaded files once its results are stored (never files "
                        "that were in the cache before)")
    e.set_defaults(func=_extract)

    pl = sub.add_parser("plan", help="what an extract and each stage of a study will cost (units, forward passes, "
                        "download, files, results disk, time), offline")
    pl.add_argument("--suite", default=default_suite, help="suite spec, as for extract (default %(default)s)")
    pl.add_argument("--steps", default="all", help="as for extract")
    pl.add_argument("--stimuli", default="lexprobe_nouns")
    pl.add_argument("--out", help="results folder (finished units are not counted again)")
    pl.add_argument("--bandwidth", type=float, default=50.0, help="assumed download speed in MB/s (default 50)")
    pl.add_argument("--assume-heads", type=int, default=2,
                    help="heads passing discovery per seed that stage 4's design is costed for (default 2)")
    _engine_flags(pl)
    pl.set_defaults(func=_plan)

    st = sub.add_parser("store", help="results store maintenance")
    ssub = st.add_subparsers(dest="store_command", required=True)
    mg = ssub.add_parser("migrate", help="pack a store of the old one-folder-per-condition layout (resumable)")
    mg.add_argument("root", nargs="?", help="results folder (default: $LEXPROBE_HOME/results)")
    mg.set_defaults(func=_store_migrate)

    o = sub.add_parser("organism", help="the offline developmental model organism")
    osub = o.add_subparsers(dest="organism_command", required=True)
    t = osub.add_parser("train", help="train (or reuse) the organism suite")
    t.add_argument("--profile", default=None, help="default | smoke (LEXPROBE_SMOKE=1 picks smoke)")
    t.add_argument("--arch", default=None, choices=FAMILIES,
                   help="train the organism in another family (default gpt_neox: pythia-14m's shape)")
    t.set_defaults(func=_organism_train)

    from lexprobe.stages import STAGES

    for stage in STAGES.values():  # a command per registered stage (validation's takes an organism profile)
        c = sub.add_parser(stage.name, aliases=list(stage.aliases), help=stage.summary)
        if stage.name == "validation":
            _validation_flags(c)
        else:
            _study_args(c)
            c.set_defaults(func=_stage, stage=stage.name)

    h = sub.add_parser("report", help="all five stages (run or reused) in one self-contained HTML file")
    _study_args(h)
    h.add_argument("--html", help="HTML file to write (default: $LEXPROBE_HOME/report-SUITE.html)")
    h.set_defaults(func=_report)

    r = sub.add_parser("run", help="main job: train/reuse the organism, stages 1-2 reports, the HTML report")
    r.add_argument("--profile", default=None, help="default | smoke (LEXPROBE_SMOKE=1 picks smoke)")
    r.add_argument("--arch", default=None, choices=FAMILIES,
                   help="train the organism in another family (default gpt_neox: pythia-14m's shape)")
    _study_args(r, suite=False)
    r.add_argument("--html", help="HTML file to write (default: $LEXPROBE_HOME/report-SUITE.html)")
    r.add_argument("--no-report", action="store_true", help="stop after the stage 1-2 reports (no stages 3-5)")
    r.set_defaults(func=_run)

    return p


def _validation_flags(v: argparse.ArgumentParser) -> None:
    """The validation command's flags: it picks the planted organism itself, and can score stage 2's rules."""
    v.add_argument("--profile", default="planted", help="an organism profile with a plant (default %(default)s; "
                                                         "LEXPROBE_SMOKE=1: planted-smoke)")
    v.add_argument("--arch", default=None, choices=FAMILIES,
                   help="train the organism in another family (default gpt_neox: pythia-14m's shape)")
    _study_args(v, suite=False)
    v.add_argument("--html", help="also write the supplement (all five stages) to this HTML file")
    v.add_argument("--rules", action="store_true", help="score stage 2's selection rules on every planted profile "
                                                        "(chosen on --choose seeds per profile, confirmed on the "
                                                        "rest)")
    v.add_argument("--choose", type=int, default=2, help="with --rules: seeds per profile to choose a rule on "
                                                         "(default %(default)s; the first ones)")
    v.add_argument("--profiles", help="with --rules: a comma list of planted profiles (default: all of them)")
    v.add_argument("--write", action="store_true", help="with --rules: write the method table to "
                                                         "data/validation/methods.csv for the findings to quote")
    v.add_argument("--seeds", type=int, help="with --rules: train and validate seeds 0..N-1 of each profile "
                                             "(default: the profile's own)")
    v.set_defaults(func=_validation)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if args.verbose:
            raise  # -v: the whole traceback
        print(f"lexprobe: error: {err} (-v shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
