"""Stages 1-4 on a GPU at real sizes, random weights: the pythia-410m shape (GPT-NeoX) and a Llama shape of about
1.1B parameters (hidden 2048, 16 layers, 32 query heads sharing 8 key heads), each in float32 and bfloat16; time
per stage. Needs a CUDA device (nothing here runs in CI).

    LEXPROBE_WORKERS=1 python benchmarks/gpu_families.py OUT_FOLDER [--steps 4]

Each shape is written as a ``local:`` suite of ``--steps`` checkpoints (random weights, a seed per step, stored in
bfloat16, tokenizer trained on the stimuli so that every word is one token) and studied with small nulls; stage 5
needs several seeds and is skipped. Prints one line per (shape, dtype): seconds per stage and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lexprobe import Study
from lexprobe.checkpoints.shapes import family_config, pythia_config, random_model, word_tokenizer
from lexprobe.stimuli.tables import load_stimuli

SHAPES = {
    "pythia-410m": lambda vocab: pythia_config("410m"),
    "llama-1.1b": lambda vocab: family_config("llama", vocab, 2048, 16, 32, kv_heads=8),
}
TINY = {  # --tiny: the same script on toy shapes, to check it on a CPU before spending GPU time
    "pythia-410m": lambda vocab: pythia_config("14m", layers=2),
    "llama-1.1b": lambda vocab: family_config("llama", vocab, 64, 2, 4, kv_heads=2),
}
SMALL = {"n_boot": 50, "n_perm": 200, "n_random": 5, "n_random_dev": 2, "map_steps": 2, "perturb_steps": 2,
         "redundancy_steps": 1, "methods": ("qk-zero", "qk-copy", "knockout"), "progress": False}


def write_suite(folder: Path, name: str, steps: int, tok, shapes: dict) -> Path:
    root = folder / name
    for step in range(steps):
        path = root / f"step{step}"
        if not (path / "config.json").is_file():
            config = shapes[name](len(tok))
            random_model(config, seed=step).to(torch.bfloat16).save_pretrained(path)
            tok.save_pretrained(path)
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy shapes (a dry run on a CPU)")
    args = ap.parse_args()
    shapes = TINY if args.tiny else SHAPES
    cuda = args.device.startswith("cuda")
    out = Path(args.out)
    stimuli = load_stimuli()
    tok = word_tokenizer(stimuli)
    rows = []
    for name in SHAPES:
        started = time.perf_counter()
        root = write_suite(out / "suites", name, args.steps, tok, shapes)
        print(f"{name}: suite written in {time.perf_counter() - started:.0f} s", flush=True)
        for dtype in ("float32", "bfloat16"):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            study = Study(f"local:{root}", stimuli, root=str(out / "results" / f"{name}-{dtype}"), device=args.device,
                          dtype=dtype, **SMALL)
            seconds = {}
            for stage in ("inflection", "discovery", "perturbation", "causal"):
                t0 = time.perf_counter()
                result = study.outcome(stage)
                seconds[stage] = round(time.perf_counter() - t0, 1)
                patching = getattr(result, "patching", None)  # None where stage 4 was skipped
                if patching is not None and len(patching.patch_exactness):
                    seconds["patch_exact"] = bool(patching.patch_exactness["exact"].all())
            row = {"shape": name, "dtype": dtype, **seconds,
                   "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "gpu_families.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
