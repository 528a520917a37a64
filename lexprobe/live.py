"""Live measurements for the interactive inspectors: one checkpoint loaded on demand (only the latest one kept),
measured now through the engine. Widgets read live data through here, never through a stage.

One thing is kept: a sentence's intact attention map at a checkpoint (what the attention inspector opens on), in
the study's results folder under ``_live``, keyed by the suite's identity, the stimuli, the settings and the code
that measures it. Opening a finished study's notebook then draws the inspector without loading torch, transformers
or a checkpoint (8.6 s of notebook 02 before); any other choice in the widget is measured live.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from lexprobe.analysis.performance import performance, with_pairs
from lexprobe.base.code import code_fingerprint
from lexprobe.base.files import atomic_write, fingerprint
from lexprobe.checkpoints.suites import Checkpoint, Loaded, Suite, load_checkpoint
from lexprobe.engine.conditions import Donor
from lexprobe.engine.device import resolve_device, torch_dtype
from lexprobe.engine.extract import ExtractConfig, attention_maps, measure
from lexprobe.engine.interventions import Intervention
from lexprobe.engine.sites import Sites
from lexprobe.stimuli.tables import Stimuli


class SentenceAttention(TypedDict):
    """One sentence's attention at a checkpoint: tokens, target and cue token indices, (L, H, T, T) weights."""

    tokens: list[str]
    target: list[int]
    cue: list[int]
    attention: np.ndarray


@lru_cache(maxsize=1)
def loaded_checkpoint(ck: Checkpoint, dtype: str = "float32", device: str = "cpu") -> Loaded:
    """One checkpoint kept in memory for interactive inspection (only the most recently used one)."""
    return load_checkpoint(ck, torch_dtype(dtype), resolve_device(device))


@lru_cache(maxsize=1)
def donor_weights(ck: Checkpoint, dtype: str = "float32", device: str = "cpu") -> Donor:
    """The Q and K weights of a checkpoint that an intervention copies from (``qk-copy``'s source): only they are
    kept, for the most recently used one, not the checkpoint."""
    ld = load_checkpoint(ck, torch_dtype(dtype), resolve_device(device))
    return Sites(None, ld.model).qk_weights(set(range(ld.n_layers)))


@dataclass(frozen=True)
class Live:
    """A suite's first model and a stimulus set, measured on demand at a study's checkpoints; ``target`` as in
    stage 1."""

    suite: Suite
    stimuli: Stimuli
    target: str
    steps: tuple[int, ...]
    config: ExtractConfig = ExtractConfig(save_embeddings=False)  # the study's dtype and device
    keep: Path | None = None  # where intact attention maps are kept (None: nowhere, every map measured)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.suite.seeds)

    def _loaded(self, seed: int, step: int) -> Loaded:
        return loaded_checkpoint(self.suite.checkpoint(self.suite.models[0], seed, step), self.config.dtype,
                                 self.config.device)

    def _donor(self, seed: int, intervention: Intervention | None) -> Donor | None:
        """The weights ``intervention`` copies from its donor step (same model and seed), if it copies any."""
        step = None if intervention is None else intervention.donor_step
        return None if step is None else donor_weights(self.suite.checkpoint(self.suite.models[0], seed, step),
                                                       self.config.dtype, self.config.device)

    def attention(self, seed: int, step: int, sentence_id: int,
                  intervention: Intervention | None = None) -> SentenceAttention:
        """One sentence's tokens, target/cue indices and attention (L, H, T, T, a numpy array) at a checkpoint
        (under ``intervention`` when given); an intact map is read from ``keep`` when it was measured before."""
        path = None if intervention is not None or self.keep is None else self._kept(seed, step, sentence_id)
        if path is not None and path.is_file():
            return read_map(path.read_bytes())
        donor = self._donor(seed, intervention)
        ld = self._loaded(seed, step)
        sents = self.stimuli.sentences
        got = attention_maps(ld.model, ld.tokenizer, sents[sents["sentence_id"] == sentence_id], intervention,
                             donor)[0]
        m = SentenceAttention(tokens=got["tokens"], target=got["target"], cue=got["cue"],
                              attention=got["attention"].numpy())
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, map_bytes(m))
        return m

    def _kept(self, seed: int, step: int, sentence_id: int) -> Path:
        assert self.keep is not None
        key = fingerprint({"suite": self.suite.identity(), "model": self.suite.models[0], "seed": seed, "step": step,
                           "stimuli": self.stimuli.hash, "sentence_id": sentence_id,
                           "config": self.config.fingerprint_fields(),
                           "code": code_fingerprint("lexprobe.engine.extract")})
        return self.keep / f"attention-{key}.npz"

    def performance(self, seed: int, step: int, intervention: Intervention | None = None) -> pd.DataFrame:
        """Per-layer performance of one checkpoint on the whole stimulus set (under ``intervention`` when given)."""
        donor = self._donor(seed, intervention)
        ld = self._loaded(seed, step)
        dist = measure(ld.model, ld.tokenizer, self.stimuli, self.config, intervention, donor,
                       progress=False)["distances"].assign(model=self.suite.models[0], seed=seed, step=step)
        return performance(with_pairs(dist, self.stimuli), target=self.target)


def map_bytes(m: SentenceAttention) -> bytes:
    """An attention map as the bytes of one ``.npz`` file."""
    buf = io.BytesIO()
    np.savez(buf, tokens=np.asarray(m["tokens"], dtype=str), target=np.asarray(m["target"], dtype=np.int64),
             cue=np.asarray(m["cue"], dtype=np.int64), attention=np.asarray(m["attention"], dtype=np.float32))
    return buf.getvalue()


def read_map(data: bytes) -> SentenceAttention:
    """The attention map :func:`map_bytes` wrote."""
    with np.load(io.BytesIO(data)) as z:
        return SentenceAttention(tokens=z["tokens"].tolist(), target=z["target"].tolist(), cue=z["cue"].tolist(),
                                 attention=z["attention"])
