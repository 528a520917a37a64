"""Live measurements for the interactive inspectors: one checkpoint loaded on demand (only the latest one kept),
measured now through the engine, nothing stored. Widgets read live data through here, never through a stage."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pandas as pd

from lexprobe.analysis.performance import performance, with_pairs
from lexprobe.checkpoints.suites import Checkpoint, Loaded, Suite, load_checkpoint
from lexprobe.engine.conditions import Donor
from lexprobe.engine.device import resolve_device, torch_dtype
from lexprobe.engine.extract import AttentionMap, ExtractConfig, attention_maps, measure
from lexprobe.engine.interventions import Intervention
from lexprobe.engine.sites import Sites
from lexprobe.stimuli.tables import Stimuli


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
                  intervention: Intervention | None = None) -> AttentionMap:
        """One sentence's tokens, target/cue indices and attention (L, H, T, T) at a checkpoint (under
        ``intervention`` when given)."""
        donor = self._donor(seed, intervention)
        ld = self._loaded(seed, step)
        sents = self.stimuli.sentences
        return attention_maps(ld.model, ld.tokenizer, sents[sents["sentence_id"] == sentence_id], intervention,
                              donor)[0]

    def performance(self, seed: int, step: int, intervention: Intervention | None = None) -> pd.DataFrame:
        """Per-layer performance of one checkpoint on the whole stimulus set (under ``intervention`` when given)."""
        donor = self._donor(seed, intervention)
        ld = self._loaded(seed, step)
        dist = measure(ld.model, ld.tokenizer, self.stimuli, self.config, intervention, donor,
                       progress=False)["distances"].assign(model=self.suite.models[0], seed=seed, step=step)
        return performance(with_pairs(dist, self.stimuli), target=self.target)
