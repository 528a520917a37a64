"""BPE tokenizers trained on any texts (the organism's corpus, the stimuli for tests and benchmarks), in the
conventions of the families lexprobe measures: byte-level with Pythia's special tokens and space convention (GPT-NeoX,
GPT-2, OLMo, SmolLM2), or SentencePiece-like with ``<s>`` before every text (Llama, Amber). Depends only on
``tokenizers`` and ``transformers``."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|padding|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, style: str = "neox") -> PreTrainedTokenizerFast:
    """Train a GPT-NeoX-style byte-level BPE: ids 0/1 are ``<|endoftext|>``/``<|padding|>``, words carry a
    leading space ("Ġbank"), no BOS is added, offsets exclude the leading space. ``style="llama"``: Llama's
    conventions instead (see :func:`_llama`)."""
    if style == "llama":
        return _llama(texts, vocab_size)
    if style != "neox":
        raise ValueError(f"tokenizer style {style!r}: use neox or llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   pad_token=PAD, model_max_length=2048)


def _llama(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A Llama-style BPE: ids 0/1/2 are ``<unk>``/``<s>``/``</s>``, words are marked with "▁" ("▁bank"), and ``<s>``
    is put before every text (so lexprobe's alignment must lead each sentence with it)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], min_frequency=2,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=2048)
