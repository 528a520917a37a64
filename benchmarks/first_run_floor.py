"""The least time ``make run`` from nothing can take on this machine with the stages as designed: the organism's
training steps and the study's forward passes at their measured single-thread cost, spread perfectly over every
core, with nothing else (no set-up, checkpoint loads or writes, Python around the passes, statistics, report).

    python benchmarks/first_run_floor.py [--steps 24] [--repeats 5]

Measured in this run, each on one torch thread by the thread's CPU time (which preemption does not inflate):

* a training step of the default organism profile: forward, backward, clipping and AdamW on one step's batch
  (median over ``--steps`` steps), and packing that batch (the tokenizer work of ``lexprobe.organism.train.batch``);
* a sentence of a bare batched forward: the stimuli in the engine's batches at the organism's shape with eager
  attention, nothing read out (median over ``--repeats`` passes, divided by the sentence count).

The forward passes per stage are those of ``lexprobe plan`` (:func:`lexprobe.plan.stage_costs`: the default
study's design, intervened units counted by the share of layers they run, stage 4 designed as if 2 heads pass
discovery per seed). Like ``lexprobe plan`` it plans an organism that is not trained yet from its profile, and
trains nothing.

``--run LOG`` puts a measured run beside its floor: LOG is what ``/usr/bin/time -v make run`` printed (the ``time
per part`` line and the wall clock), and each part is printed with its floor and their ratio (training against the
``suite`` part; each stage's forward passes against that stage).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import torch
from common import bare_forward, engine_batches
from transformers import GPTNeoXForCausalLM

from lexprobe import Study
from lexprobe.checkpoints.shapes import neox_config
from lexprobe.organism.corpus import Corpus, load_lexicon
from lexprobe.organism.profiles import Profile
from lexprobe.organism.suite import get_profile, planned
from lexprobe.organism.train import batch, build_tokenizer, model_config
from lexprobe.plan import stage_costs
from lexprobe.sweep.pool import workers

TARGET = 15 * 60


def training_step(p: Profile, steps: int) -> tuple[float, float, object]:
    """Median CPU seconds of one training step and of packing its batch; and the profile's tokenizer."""
    corpus = Corpus(load_lexicon(), p.corpus)
    tok = build_tokenizer(p, corpus)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(model_config(p, len(tok))).train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=p.weight_decay)
    pack, step = [], []
    for s in range(steps):
        t0 = time.thread_time()
        x = batch(tok, corpus, p, 0, s)
        t1 = time.thread_time()
        model(input_ids=x, labels=x).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        pack.append(t1 - t0)
        step.append(time.thread_time() - t1)
    return statistics.median(step[2:]), statistics.median(pack[2:]), tok


def forward_per_sentence(p: Profile, tok: object, study: Study, repeats: int) -> float:
    """Median CPU seconds per sentence of a bare eager forward of the study's stimuli at the organism's shape."""
    model = GPTNeoXForCausalLM(neox_config(len(tok), p.hidden_size, p.layers, p.heads)).eval()
    batches = engine_batches(model, tok, study.stimulus_set, study.batch_size)
    bare_forward(model, batches)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        bare_forward(model, batches)
        times.append(time.thread_time() - t0)
    return statistics.median(times) / len(study.stimulus_set.sentences)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=24, help="training steps timed (the first 2 are not counted)")
    ap.add_argument("--repeats", type=int, default=5, help="bare forward passes of the stimuli timed")
    ap.add_argument("--run", type=Path, help="the log of /usr/bin/time -v make run, to put beside the floor")
    args = ap.parse_args()
    if args.steps < 3 or args.repeats < 1:
        ap.error(f"--steps {args.steps} --repeats {args.repeats}: time at least 3 steps (the first 2 are warm-up) "
                 "and 1 repeat")
    torch.set_num_threads(1)
    p, cores = get_profile(None), workers()
    suite, shape = planned("organism")  # not trained yet: planned from its profile's shape (nothing trains)
    study = Study(suite, progress=False)
    step, pack, tok = training_step(p, args.steps)
    per_sentence = forward_per_sentence(p, tok, study, args.repeats)
    costs = stage_costs(study, shape=shape)
    n_steps = len(p.seeds) * p.total_steps
    train_cpu = n_steps * (step + pack)
    forwards = {c.stage: c.forward for c in costs if c.forward}
    forward_cpu = sum(forwards.values()) * per_sentence
    print(f"organism profile {p.name}: {len(p.seeds)} seeds x {p.total_steps} steps; stimuli "
          f"{study.stimulus_set.name} ({len(study.stimulus_set.sentences)} sentences); {cores} cores")
    print(f"training: {n_steps:,d} steps x ({step:.3f} s step + {pack:.3f} s packing its batch) = {train_cpu:,.0f} s "
          f"of one core")
    print(f"forward passes: {' + '.join(f'{k} {v:,d}' for k, v in forwards.items())} = "
          f"{sum(forwards.values()):,d} sentences x {1000 * per_sentence:.3f} ms = {forward_cpu:,.0f} s of one core")
    floor = (train_cpu + forward_cpu) / cores
    print(f"floor of `make run` from nothing on {cores} cores: {floor:,.0f} s = {floor / 60:.1f} min (training "
          f"{train_cpu / cores:,.0f} s + forward passes {forward_cpu / cores:,.0f} s), before set-up, loads, "
          f"statistics and the report; target {TARGET} s: {'reachable' if floor < TARGET else 'NOT reachable'} "
          f"with this design")
    if args.run:
        beside_run(args.run.read_text(), train_cpu / cores,
                   {k.split()[-1]: v * per_sentence / cores for k, v in forwards.items()}, floor)


def beside_run(log: str, train_floor: float, stage_floors: dict[str, float], floor: float) -> None:
    """Each part of a measured ``make run`` (its ``time per part`` line) beside its floor."""
    parts = re.search(r"time per part: (.*); total", log)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", log)
    if parts is None or wall is None:
        raise SystemExit("--run: no 'time per part' line or no /usr/bin/time -v wall clock in the log")
    measured = {name: float(sec) for name, sec in re.findall(r"([\w-]+) ([\d.]+) s", parts.group(1))}
    print(f"{'part':<24}{'measured':>10}{'floor':>10}{'ratio':>8}")
    for name, sec in measured.items():
        low = train_floor if name == "suite" else stage_floors.get(name)
        print(f"{name:<24}{sec:>9.1f}s" + (f"{low:>9.1f}s{sec / low:>7.2f}x" if low else f"{'-':>10}{'-':>8}"))
    total = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    print(f"{'make run (wall clock)':<24}{total:>9.1f}s{floor:>9.1f}s{total / floor:>7.2f}x")


if __name__ == "__main__":
    main()
