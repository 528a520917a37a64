"""One organism training process: ``python -m lexprobe.organism.worker ROOT SEED``.

:func:`lexprobe.organism.suite.ensure_trained` starts one per seed (a fresh interpreter, so a caller's script is
never re-imported) after writing the profile into ``ROOT/profile.json``; the process rebuilds the tokenizer
(deterministic: the same as the caller's), trains the seed into ``ROOT/hub`` and exits 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers.utils import logging as hf_logging

from lexprobe.organism.corpus import Corpus, load_lexicon
from lexprobe.organism.profiles import Profile
from lexprobe.organism.train import build_tokenizer, train_seed


def main(argv: list[str]) -> None:
    root, seed = Path(argv[0]), int(argv[1])
    hf_logging.disable_progress_bar()
    p = Profile.from_dict(json.loads((root / "profile.json").read_text()))
    corpus = Corpus(load_lexicon(), p.corpus)
    train_seed(p, seed, corpus, build_tokenizer(p, corpus), root / "hub", root, progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
