"""Cost of one patched run relative to one intact pass of the engine, side by side on one random checkpoint.

A patch at the target's tokens leaves every earlier token untouched, so :class:`lexprobe.engine.patches.PatchRunner`
computes each sentence's prefix once (key/value cache) and runs every patch on the target's tokens only, several
patches side by side in one forward. Per shape (random weights in Pythia's exact layout) and the shipped stimuli
against their ``neutral`` counterfactual, each round times: the engine's intact measurement of the set; the
runner's preparation (both sides' prefixes and intact target passes); and the patch map's single-head patches in
both directions. Rounds alternate so machine noise hits all alike. Printed: the median time per patch over the
median intact time (target: at most 0.3x), and the preparation over the intact time.

    python benchmarks/patch_cost.py [--rounds 3] [--shapes 14m 410m] [--patches 48]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from common import stimulus_tokenizer

from lexprobe.checkpoints.shapes import pythia_config, random_model
from lexprobe.engine.extract import ExtractConfig, measure
from lexprobe.engine.patches import PatchRunner
from lexprobe.stages.patching import patch_design
from lexprobe.stimuli.perturb import neutral
from lexprobe.stimuli.tables import load_stimuli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", nargs="+", default=["14m", "410m"])
    ap.add_argument("--patches", type=int, default=48, help="single-head patches timed per round (evenly spaced)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stim = load_stimuli("lexprobe_nouns")
    tok = stimulus_tokenizer(stim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cf = neutral(stim, tokenizer=tok)
    for shape in args.shapes:
        cfg = pythia_config(shape, vocab=len(tok))
        model = random_model(cfg, 0)
        heads = cfg.num_hidden_layers * cfg.num_attention_heads
        singles = [p for p in patch_design(cfg.num_hidden_layers, cfg.num_attention_heads)
                   if p.heads is not None and len(p.heads) == 1]
        patches = [singles[i] for i in sorted({int(i) for i in torch.linspace(0, len(singles) - 1, args.patches)})]
        measure(model, tok, stim, ExtractConfig(save_embeddings=False), progress=False)  # warm-up, sites checked
        intact, prep, patched = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            measure(model, tok, stim, ExtractConfig(save_embeddings=False), progress=False)
            t1 = time.perf_counter()
            runner = PatchRunner(model, tok, stim, cf)
            t2 = time.perf_counter()
            runner.embeddings(patches)
            t3 = time.perf_counter()
            intact.append(t1 - t0)
            prep.append(t2 - t1)
            patched.append((t3 - t2) / len(patches))
        i, p, q = statistics.median(intact), statistics.median(prep), statistics.median(patched)
        print(f"pythia-{shape} shape ({heads} heads; {len(stim.sentences)} sentences, {len(patches)} single-head "
              f"patches): intact pass {i:.3f} s; runner preparation {p:.3f} s = {p / i:.2f}x; one patched run "
              f"{q * 1000:.1f} ms = {q / i:.3f}x of the intact pass (target <= 0.3x)")
        del model


if __name__ == "__main__":
    main()
