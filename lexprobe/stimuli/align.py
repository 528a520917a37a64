"""Word-to-token alignment for the target and cue words, and right-padded batch encoding."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lexprobe.base.lazy import torch
from lexprobe.stimuli.tables import StimulusError, locate

if TYPE_CHECKING:  # the data layer knows no suite: the tokenizer's type straight from transformers
    from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    """Right-padded token ids with boolean masks marking each sentence's target and cue tokens."""

    input_ids: torch.Tensor  # (n, T) long
    attention_mask: torch.Tensor  # (n, T) long, 1 = real token
    target_mask: torch.Tensor  # (n, T) bool
    cue_mask: torch.Tensor  # (n, T) bool
    tokens: list[list[str]]
    control_mask: torch.Tensor | None = None  # (n, T) bool: the position-matched control word's tokens, if any

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(1)

    def to(self, device: torch.device | str) -> Encoded:
        """The same batch with its tensors on ``device``."""
        ctrl = None if self.control_mask is None else self.control_mask.to(device)
        return Encoded(self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device),
                       self.cue_mask.to(device), self.tokens, ctrl)

    def rows(self, idx: torch.Tensor | list[int]) -> Encoded:
        """A sub-batch, trimmed to its longest sentence."""
        idx = torch.as_tensor(idx)
        width = int(self.attention_mask[idx].sum(1).max())
        ctrl = None if self.control_mask is None else self.control_mask[idx, :width]
        return Encoded(self.input_ids[idx, :width], self.attention_mask[idx, :width], self.target_mask[idx, :width],
                       self.cue_mask[idx, :width], [self.tokens[i] for i in idx.tolist()], ctrl)


def token_span(offsets: list[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    """Indices of tokens whose characters overlap ``span`` (a leading-space token like " bank" overlaps)."""
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < span[1] and b > span[0]]


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer puts before every text: Llama's ``<s>``, none for Pythia's or GPT-2's. A model is
    measured on text as it was trained on it, so these lead every sentence; anything appended after is not added."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    return next((list(full[:k]) for k in range(len(full) - len(bare) + 1) if full[k:k + len(bare)] == bare), [])


def align(tokenizer: PreTrainedTokenizerBase, sentence: str, target: str,
          cue: str) -> tuple[list[int], list[int], list[int], list[str]]:
    """Token ids (after the tokenizer's :func:`special_prefix`) plus the token indices of the target (the occurrence
    after the cue) and of that cue."""
    enc = tokenizer(sentence, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets, tokens = _led(tokenizer, [(enc["input_ids"], enc["offset_mapping"],
                                             tokenizer.convert_ids_to_tokens(enc["input_ids"]))])[0]
    t_idx, c_idx = _spans(sentence, target, cue, offsets)
    return ids, t_idx, c_idx, tokens


def _led(tokenizer: PreTrainedTokenizerBase, rows: list) -> list[tuple[list[int], list, list[str]]]:
    """Each (ids, offsets, tokens) led by the tokenizer's :func:`special_prefix`, at offset (0, 0) so that no word
    maps to it."""
    prefix = special_prefix(tokenizer)
    lead = [str(tokenizer.convert_ids_to_tokens(i)) for i in prefix]  # one id gives one token string
    return [(prefix + list(ids), [(0, 0)] * len(prefix) + [tuple(o) for o in offs], lead + list(toks))
            for ids, offs, toks in rows]


def _spans(sentence: str, target: str, cue: str, offsets: list) -> tuple[list[int], list[int]]:
    """Token indices of the target and cue of a tokenized sentence, from the tokens' character offsets."""
    found = locate(sentence, target, cue)
    if found is None:
        raise StimulusError(f"sentence {sentence!r}: no occurrence of target {target!r} after cue {cue!r}")
    offsets = [tuple(o) for o in offsets]
    t_idx, c_idx = token_span(offsets, found[0]), token_span(offsets, found[1])
    if not t_idx or not c_idx:
        raise StimulusError(f"sentence {sentence!r}: could not map target/cue to tokens (offsets {offsets})")
    if set(t_idx) & set(c_idx):
        raise StimulusError(f"sentence {sentence!r}: target {target!r} and cue {cue!r} share a token")
    return t_idx, c_idx


def tokenize_all(tokenizer: PreTrainedTokenizerBase, sentences: list[str]) -> list[tuple[list[int], list, list[str]]]:
    """(ids, character offsets, token strings) per sentence, led by the tokenizer's :func:`special_prefix`, in one
    batched call (straight to the Rust tokenizer when there is one: the Python wrapper's per-sentence bookkeeping
    costs more)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        rows = [(e.ids, e.offsets, e.tokens) for e in backend.encode_batch(sentences, add_special_tokens=False)]
    else:
        batch = tokenizer(sentences, return_offsets_mapping=True, add_special_tokens=False)
        rows = [(ids, offs, tokenizer.convert_ids_to_tokens(ids))
                for ids, offs in zip(batch["input_ids"], batch["offset_mapping"])]
    return _led(tokenizer, rows)


def encode(tokenizer: PreTrainedTokenizerBase, sentences: pd.DataFrame, pad_id: int = 0) -> Encoded:
    """Encode a sentence table (columns sentence, string, cue, optional control) into one right-padded batch.

    Right padding keeps every real token at its unpadded position, and causal attention never lets a real
    token see a pad, so batched results equal unbatched ones.
    """
    rows = []
    for r, (sent_ids, offsets, tokens) in zip(sentences.itertuples(index=False),
                                              tokenize_all(tokenizer, list(sentences["sentence"]))):
        try:
            rows.append((sent_ids, *_spans(r.sentence, r.string, r.cue, offsets), tokens))
        except StimulusError as err:
            raise StimulusError(f"sentence_id {getattr(r, 'sentence_id', '?')}: {err}") from err
    n, width = len(rows), max(len(r[0]) for r in rows)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    tmask = np.zeros((n, width), dtype=bool)
    cmask = np.zeros((n, width), dtype=bool)
    for i, (tok_ids, t_idx, c_idx, _) in enumerate(rows):  # numpy: a fraction of torch's per-call cost
        ids[i, : len(tok_ids)] = tok_ids
        mask[i, : len(tok_ids)] = 1
        tmask[i, t_idx] = True
        cmask[i, c_idx] = True
    enc = Encoded(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(tmask), torch.from_numpy(cmask),
                  [r[3] for r in rows])
    if "control" in sentences.columns:  # perturbed sets: the word now standing where the cue stood
        ctrl = encode(tokenizer, sentences.assign(cue=sentences["control"]).drop(columns="control"), pad_id)
        if not torch.equal(ctrl.input_ids, enc.input_ids):
            raise StimulusError("control words changed the tokenization; cannot align them with the cue")
        enc.control_mask = ctrl.cue_mask
    return enc


_LAST: list[tuple[weakref.ref, weakref.ref, int, Encoded]] = []  # the last encoding, for the next condition


def encoded(tokenizer: PreTrainedTokenizerBase, sentences: pd.DataFrame, pad_id: int = 0) -> Encoded:
    """:func:`encode`, reusing the last result when the same tokenizer object encodes the same table object again:
    every condition measured on a loaded checkpoint encodes its stimuli, and one encoding serves them all (an
    :class:`Encoded` is never changed in place; its users take :meth:`Encoded.rows`)."""
    if _LAST:
        tok, table, pad, enc = _LAST[0]
        if tok() is tokenizer and table() is sentences and pad == pad_id:
            return enc
    enc = encode(tokenizer, sentences, pad_id)
    _LAST[:] = [(weakref.ref(tokenizer), weakref.ref(sentences), pad_id, enc)]
    return enc
