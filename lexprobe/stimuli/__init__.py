"""What is measured: stimulus tables (RAW-C schema, validated), perturbed sets, word-to-token alignment, the
original study's published tables. The names that lived in the old ``lexprobe.stimuli`` module are re-exported."""

from lexprobe.stimuli.tables import Stimuli, StimulusError, from_pairs, load_rawc, load_stimuli

__all__ = ["Stimuli", "StimulusError", "from_pairs", "load_rawc", "load_stimuli"]
