"""The Pythia model shapes, offline: exact configs, parameter counts, checkpoint sizes, random stand-ins.

Configs are those of the ``config.json`` files of ``EleutherAI/pythia-{size}`` (the same numbers as Table 1 of
Biderman et al. 2023, "Pythia: A Suite for Analyzing Large Language Models Across Training and Scaling", whose
non-embedding parameter counts the tests reproduce): GPT-NeoX with rotary_pct 0.25, parallel residual, untied
input/output embeddings, intermediate size 4 x hidden, 2048 positions. The checkpoints are stored in float16
(``"torch_dtype": "float16"``), so a checkpoint's download is its parameter count x 2 bytes (plus the tokenizer,
about 2 MB; a file may also carry a few small non-parameter buffers, not counted).

The size table is also the list of Pythia sizes :mod:`lexprobe.checkpoints.suites` accepts, so this module imports
torch,
transformers, pandas and the tokenizer trainer inside the functions that use them: reading the table loads none of
them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lexprobe.base.families import FAMILIES

if TYPE_CHECKING:
    from transformers import GPTNeoXConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

    from lexprobe.stimuli.tables import Stimuli

# size: (hidden, layers, heads, vocab)
PYTHIA_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "14m": (128, 6, 4, 50304), "31m": (256, 6, 8, 50304), "70m": (512, 6, 8, 50304),
    "160m": (768, 12, 12, 50304), "410m": (1024, 24, 16, 50304), "1b": (2048, 16, 8, 50304),
    "1.4b": (2048, 24, 16, 50304), "2.8b": (2560, 32, 32, 50304), "6.9b": (4096, 32, 32, 50432),
    "12b": (5120, 36, 40, 50688),
}
CHECKPOINT_BYTES_PER_PARAM = 2  # float16 on the hub
TOKENIZER_BYTES = 2_113_000  # tokenizer.json + configs of a Pythia revision, rounded


def neox_config(vocab: int, hidden: int, layers: int, heads: int, positions: int = 2048,
                attention: str = "eager") -> GPTNeoXConfig:
    """A GPT-NeoX config in Pythia's layout at any shape, the one place its conventions are written: rotary on a
    quarter of each head (base 10000), parallel residual, untied input/output embeddings, MLP 4 x hidden,
    ``<|endoftext|>`` (id 0) as BOS and EOS; ``positions`` positions, ``attention`` the implementation to run
    (measurement needs ``"eager"``: it returns the attention weights)."""
    from transformers import GPTNeoXConfig

    # transformers' typed signature lists only the config's fields; at runtime it takes the legacy rotary_pct and
    # rotary_emb_base (folded into rope_parameters) and attn_implementation like every config
    return GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,  # type: ignore[call-arg]
                         intermediate_size=4 * hidden, rotary_pct=0.25, rotary_emb_base=10000,
                         max_position_embeddings=positions, use_parallel_residual=True, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=0, attn_implementation=attention)


def pythia_config(size: str, layers: int | None = None, vocab: int | None = None) -> GPTNeoXConfig:
    """The exact GPT-NeoX config of a Pythia size (optionally fewer layers or a smaller vocabulary), eager."""
    if size not in PYTHIA_SHAPES:
        raise ValueError(f"unknown Pythia size {size!r}; choose from {tuple(PYTHIA_SHAPES)}")
    hidden, n_layers, heads, n_vocab = PYTHIA_SHAPES[size]
    return neox_config(vocab or n_vocab, hidden, layers or n_layers, heads)


def param_count(size: str) -> int:
    """Exact parameter count: per layer QKV + output projection (4d^2 + 4d), MLP (8d^2 + 5d), two layer norms
    (4d); a final layer norm (2d); input and output embeddings (2 V d)."""
    d, n_layers, _, vocab = PYTHIA_SHAPES[size]
    return n_layers * (12 * d * d + 13 * d) + 2 * d + 2 * vocab * d


def checkpoint_bytes(size: str) -> int:
    """Download size of one revision: float16 weights plus the tokenizer files."""
    return param_count(size) * CHECKPOINT_BYTES_PER_PARAM + TOKENIZER_BYTES


def family_config(arch: str, vocab: int, hidden: int, layers: int, heads: int, positions: int = 2048,
                  attention: str = "eager", kv_heads: int | None = None) -> PretrainedConfig:
    """A config of one family at any shape, with that family's conventions: ``gpt_neox`` Pythia's
    (:func:`neox_config`); ``gpt2`` the Stanford CRFM runs' (scores scaled by 1/(layer+1), tied embeddings; no
    dropout, like the others);
    ``llama``, ``olmo``, ``olmo2`` with ``kv_heads`` key/value heads (default: half the query heads, grouped-query,
    for ``llama``; every head for the OLMos) and an MLP of 4 x hidden. ``<|endoftext|>`` (id 0) is BOS and EOS."""
    if arch == "gpt_neox":
        return neox_config(vocab, hidden, layers, heads, positions, attention)
    from transformers import AutoConfig

    common: dict = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0, "attn_implementation": attention}
    if arch == "gpt2":
        # no dropout, as in every other family's config here (GPT2Config's default is 0.1): the organism trained
        # in each family then differs from the GPT-NeoX one in its architecture alone
        return AutoConfig.for_model("gpt2", n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions,
                                    scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; lexprobe knows {tuple(FAMILIES)}")
    kv = kv_heads or (max(heads // 2, 1) if arch == "llama" else heads)
    return AutoConfig.for_model(arch, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                num_key_value_heads=kv, intermediate_size=4 * hidden,
                                max_position_embeddings=positions, tie_word_embeddings=False, pad_token_id=None,
                                **common)


def random_model(config: PretrainedConfig, seed: int = 0) -> PreTrainedModel:
    """Random weights in a given shape (any family), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def word_tokenizer(stimuli: Stimuli) -> PreTrainedTokenizerFast:
    """A GPT-NeoX-style byte-level BPE trained on the stimuli until every word is one token ("Ġbank") and every
    punctuation mark another: the lengths Pythia's tokenizer gives sentences of common English words (rarer words
    would split into 2-3 tokens there), for when the real tokenizer is not at hand."""
    from lexprobe.checkpoints.bpe import train_tokenizer

    return train_tokenizer(list(stimuli.sentences["sentence"]) * 3, vocab_size=8192)


def rawc_sized(stimuli: Stimuli, n_sentences: int = 336) -> Stimuli:
    """``n_sentences`` RAW-C-like sentences (RAW-C's nouns give 336): the stimuli, then copies whose first word is
    replaced by another single word (same length, new sentences), cut at whole target words."""
    import pandas as pd

    from lexprobe.stimuli.tables import from_pairs

    pairs = stimuli.pairs[["word", "sentence1", "sentence2", "same", "ambiguity_type", "disambiguating_word1",
                           "disambiguating_word2", "Class", "mean_relatedness", "string"]]
    copies, k = [pairs], 1
    while sum(len(c) for c in copies) * len(stimuli.sentences) / len(pairs) < n_sentences:
        c = pairs.assign(word=pairs["word"] + f"-{k}")
        for col in ("sentence1", "sentence2"):
            c[col] = c[col].str.replace(r"^\S+", ("Somebody", "Anyone", "Everybody")[(k - 1) % 3], regex=True)
        copies.append(c)
        k += 1
    both = pd.concat(copies, ignore_index=True)
    per_word = len(stimuli.sentences) // stimuli.pairs["word"].nunique()
    words = list(dict.fromkeys(both["word"]))[: n_sentences // per_word]
    return from_pairs(both[both["word"].isin(words)], name=f"{stimuli.name}-{n_sentences}")
