"""Train the organism: a pythia-14m-shaped model (GPT-NeoX, or another family) on the synthetic corpus, checkpointed
into a hub cache.

Deterministic per seed (weights from ``torch.manual_seed(seed)``, each step's batch from a generator seeded by
``(seed, step)``), resumable (optimizer state saved at each checkpoint), and written through
:mod:`lexprobe.checkpoints.hubcache` so :mod:`lexprobe.checkpoints.suites` loads it exactly like Pythia's ``stepN``
branches.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast

from lexprobe.base.progress import tqdm
from lexprobe.checkpoints.bpe import train_tokenizer
from lexprobe.checkpoints.hubcache import add_revision, has_revision
from lexprobe.checkpoints.revisions import STEP_N
from lexprobe.checkpoints.shapes import family_config
from lexprobe.organism.corpus import Corpus, Sample, Span
from lexprobe.organism.planted import DecoyHold, closed_at, closed_heads, mean_leak, planted_forward
from lexprobe.organism.profiles import Profile


def model_config(p: Profile, vocab: int) -> PretrainedConfig:
    """The profile's family in its conventions (:func:`lexprobe.checkpoints.shapes.family_config`; GPT-NeoX:
    pythia-14m's layout), the profile's shape and the organism vocabulary; trained with SDPA attention for speed
    (loading for measurement always forces eager)."""
    return family_config(p.arch, vocab, p.hidden_size, p.layers, p.heads, attention="sdpa")


def build_tokenizer(p: Profile, corpus: Corpus) -> PreTrainedTokenizerFast:
    """Tokenizer trained on a fixed sample spanning both phases of the corpus, plus the lexicon's frames."""
    rng = np.random.default_rng(12345)
    half = p.tokenizer_sentences // 2
    texts = corpus.texts(rng, 0, half) + corpus.texts(rng, p.onset, half)
    return train_tokenizer(texts, p.vocab_size)


def _tokens_in(offsets: list[tuple[int, int]], span: Span | None) -> list[int]:
    """Indices of the tokens whose character offsets overlap ``span``."""
    if span is None:
        return []
    return [i for i, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]


def _readers(offsets: list[tuple[int, int]], s: Sample, readers: str) -> list[int]:
    """The tokens whose edges to the sample's cue are planted: its noun's, or every token after the cue."""
    if readers == "noun":
        return _tokens_in(offsets, s.noun_span)
    return _tokens_in(offsets, None if s.cue_span is None else (s.cue_span[1], len(s.text)))


def packed(tok: PreTrainedTokenizerFast, corpus: Corpus, p: Profile, seed: int, step: int,
           edges: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    """The (batch, seq_len) token block for one step (sentences packed back to back, EOS between documents), its
    (batch, seq_len, seq_len) planted edges: True at (query, key) when the key is a token of a sentence's cue and
    the query a token of that sentence's ambiguous noun (or, with the plant's ``readers="sentence"``, any token of
    the sentence after the cue); None for the edges when not ``edges`` (the same token block, made faster); and,
    for a plant with decoys, the edges decoys are trained to attend along: ``cue`` (the noun's tokens to its cue's)
    and ``previous`` (the noun's tokens to the token before the noun)."""
    readers = p.plant.readers if p.plant else "noun"
    decoys = bool(edges and p.plant and p.plant.decoys)
    rng = np.random.default_rng([seed, step])
    rows = []
    shape = (p.batch_size, p.seq_len, p.seq_len)
    cut = torch.zeros(shape, dtype=torch.bool) if edges else None
    pulls = {k: torch.zeros(shape, dtype=torch.bool) for k in ("cue", "previous")} if decoys else {}
    for r in range(p.batch_size):
        ids: list[int] = []
        while len(ids) < p.seq_len:
            samples: list[Sample] = corpus.samples(rng, step, 4)
            enc = tok([s.text for s in samples], add_special_tokens=False, return_offsets_mapping=True)
            for s, t, offsets in zip(samples, enc["input_ids"], enc["offset_mapping"]):
                if ids:
                    ids.append(tok.eos_token_id)
                start = len(ids)
                ids.extend(t)
                if cut is None:
                    continue
                cue = [start + k for k in _tokens_in(offsets, s.cue_span) if start + k < p.seq_len]
                for q in _readers(offsets, s, readers):
                    if start + q < p.seq_len:
                        cut[r, start + q, cue] = True
                if decoys:
                    nouns = [start + q for q in _tokens_in(offsets, s.noun_span) if start + q < p.seq_len]
                    for q in nouns:
                        pulls["cue"][r, q, cue] = True
                        if nouns[0] > 0:
                            pulls["previous"][r, q, nouns[0] - 1] = True
        rows.append(ids[: p.seq_len])
    return torch.tensor(rows), cut, pulls


def batch(tok: PreTrainedTokenizerFast, corpus: Corpus, p: Profile, seed: int, step: int) -> torch.Tensor:
    """The (batch, seq_len) token block for one step (:func:`packed` without its edges)."""
    return packed(tok, corpus, p, seed, step, edges=False)[0]


DECOY_RAMP = (0.25, 0.9)  # the decoys' target attention mass at ``decoys_from`` and at the last step


def decoy_target(p: Profile, step: int) -> float:
    """The decoys' target attention mass at ``step``: a linear ramp from ``DECOY_RAMP[0]`` (about an untrained
    head's mass) at the plant's ``decoys_from`` to ``DECOY_RAMP[1]`` at the last step, so that their trajectory
    rises through training as R^2 does, not in one jump (nothing else trains their queries and keys: what they
    write does not depend on where they look)."""
    start = p.plant.decoys_from if p.plant else 0
    frac = min(1.0, max(0.0, (step - start) / max(1, p.total_steps - start)))
    return DECOY_RAMP[0] + (DECOY_RAMP[1] - DECOY_RAMP[0]) * frac


def decoy_edges(decoys: tuple[tuple[int, int, str], ...], pulls: dict[str, torch.Tensor]
                ) -> dict[tuple[int, int], torch.Tensor]:
    """Each decoy head's edges to attend along: the token before the noun for ``previous`` decoys, the cue else."""
    return {(layer, head): pulls["previous" if kind == "previous" else "cue"] for layer, head, kind in decoys}


def lr_at(p: Profile, step: int) -> float:
    """Linear warmup, cosine decay to 10% of the peak at step ``decay_end`` (default: the last step), then 10%."""
    if step < p.warmup:
        return p.lr * (step + 1) / p.warmup
    frac = (step - p.warmup) / max(1, (p.decay_end or p.total_steps) - p.warmup)
    return p.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def load_state(path: Path) -> dict[str, Any]:
    """A saved resume state: plain tensors, dicts, lists and numbers only (``weights_only=True``), so a tampered
    cache folder cannot make loading run code."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"{path}: resume state holds objects other than tensors and plain containers; refusing "
                           f"to unpickle it. Delete the file to retrain this seed from scratch. ({err})") from err


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous count afterwards. Weights then do not depend on the
    machine's core count, and seeds use the cores by training in parallel processes: at this model size two
    threads per matmul gain little on an idle machine and run several times slower on a shared one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@one_thread()
def train_seed(p: Profile, seed: int, corpus: Corpus, tok: PreTrainedTokenizerFast, cache_dir: Path,
               state_dir: Path, progress: bool = True) -> list[float]:
    """Train one seed on one thread, writing every checkpoint of the schedule; resumes from saved state. Returns
    the language-model losses of the steps it ran; at each checkpoint appends that step's loss and (planted
    profiles) its leak (:func:`lexprobe.organism.planted.mean_leak`; NaN without a penalty) to
    ``STATE_DIR/train-seed<k>.jsonl``."""
    repo = p.repo(seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(p, len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=p.weight_decay)
    state_path = state_dir / f"state-seed{seed}.pt"
    start = 0
    if state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    decoys = p.decoy_heads(seed)
    hold = DecoyHold(model, decoys, seed)
    hold.apply(model)
    if start == 0 and not has_revision(cache_dir, repo, "step0"):
        add_revision(cache_dir, repo, "step0", model.eval(), tok)
    ckpts = set(p.checkpoints)
    designated = p.planted_heads(seed)
    # never open: every head but the designated ones and the decoys (which attend freely and carry nothing)
    closed = closed_heads(designated + tuple(h[:2] for h in decoys), p.layers, p.heads) if p.plant else None
    losses: list[float] = []
    leak_now = float("nan")
    model.train()
    for step in tqdm(range(start, p.total_steps), desc=f"seed {seed}", initial=start, total=p.total_steps,
                     disable=not progress, leave=False):
        x, cut, pulls = packed(tok, corpus, p, seed, step, edges=closed is not None)
        for g in opt.param_groups:
            g["lr"] = lr_at(p, step)
        leak: list[tuple[torch.Tensor, int]] = []
        pull: list[tuple[torch.Tensor, int]] = []
        pulled = decoy_edges(decoys, pulls) if decoys and p.plant and step >= p.plant.decoys_from else None
        if closed is None or cut is None or p.plant is None:
            loss = model(input_ids=x, labels=x).loss
        else:
            now, penalized = closed, None
            if not p.plant.plain:  # timed or OR plants: each sequence's cut at this step
                now = closed_at(designated, p.plant.opens, p.plant.mode == "one", step, x.shape[0], p.layers,
                                p.heads, np.random.default_rng([p.plant.salt, seed, step]))
                now = now & closed_heads(tuple(h[:2] for h in decoys), p.layers, p.heads)[None]  # decoys: open
                # an OR's designated heads are each closed in some sequences: only never-open heads are penalised
                penalized = now & closed[None] if p.plant.mode == "one" else None
            loss = planted_forward(model, x, cut, now, leak=leak if p.plant.leak_penalty else None,
                                   penalized=penalized, pull=pull, pulled=pulled, labels=x).loss
        lm_loss = loss
        if leak and p.plant is not None:
            step_leak = mean_leak(leak)
            leak_now = step_leak.item()
            loss = loss + p.plant.leak_penalty * step_leak
        if pull and p.plant is not None:
            loss = loss + p.plant.decoy_pull * (mean_leak(pull) - decoy_target(p, step)) ** 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        hold.apply(model)
        opt.zero_grad(set_to_none=True)
        losses.append(lm_loss.item())
        done = step + 1
        if done in ckpts:
            with open(state_dir / f"train-seed{seed}.jsonl", "a") as log:
                log.write(json.dumps({"step": done, "loss": losses[-1], "leak": leak_now}) + "\n")
            add_revision(cache_dir, repo, STEP_N.format(done), model.eval(), tok)
            model.train()
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done}, tmp)
            os.replace(tmp, state_path)
    state_path.unlink(missing_ok=True)
    return losses
