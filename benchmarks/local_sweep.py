"""Acceptance run: `lexprobe extract` over a local suite of 5 random pythia-14m-shaped checkpoints, then again.

Writes the suite to a temporary folder (stepN/ HF folders), runs the CLI twice, loads the results into one
DataFrame and prints times and row counts; the second run must do no model work (all checkpoints cached).

    python benchmarks/local_sweep.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import pythia14m_random, stimulus_tokenizer

from lexprobe.cli import main as cli
from lexprobe.stimuli.tables import load_stimuli
from lexprobe.store.results import load_results


def main() -> None:
    stimuli = load_stimuli()
    tok = stimulus_tokenizer(stimuli)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "random14m"
        for i, step in enumerate((0, 1, 2, 4, 8)):
            pythia14m_random(i).save_pretrained(suite / f"step{step}")
            tok.save_pretrained(suite / f"step{step}")
        args = ["extract", "--suite", f"local:{suite}", "--out", str(Path(tmp) / "results")]
        for label in ("first run", "re-run"):
            t0 = time.perf_counter()
            assert cli(args) == 0
            print(f"{label}: {time.perf_counter() - t0:.1f} s")
        for m in ("distances", "heads", "embeddings"):
            df = load_results(m, root=Path(tmp) / "results")
            print(f"{m}: {len(df)} rows, steps {sorted(int(s) for s in df['step'].unique())}")


if __name__ == "__main__":
    main()
