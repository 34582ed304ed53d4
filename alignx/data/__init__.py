"""Data: loaders for every source -> ``AlignRecord``, a registry by name (``load``, ``available``),
decontamination against the evaluation files (``EvalIndex``), preference pairs, splits."""
from alignx.data.decontam import EvalIndex, FilterReport, decontaminate, normalize, removed_counts
from alignx.data.loaders import (load_alignx, load_alpaca, load_beavertails, load_model_outputs,
                                 load_preference_dimensions, load_safety_eval, load_safety_instructions,
                                 load_sft_file, load_truthfulqa, load_truthfulqa_mc)
from alignx.data.pairs import PairSet, axis_pairs, load_pair_file
from alignx.data.paths import data_file, resolve_data_dir
from alignx.data.records import AXES, AlignRecord, DataError, to_dataset
from alignx.data.registry import available, load
from alignx.data.splits import seeded_split, split_half, split_truthfulqa_mc

SAFETY_HARMFUL_SETS = ("I-CoNa", "I-Controversial", "I-PhysicalSafetyUnsafe")
SAFETY_BENIGN_SETS = ("I-Alpaca", "I-PhysicalSafetySafe")

__all__ = ["AXES", "AlignRecord", "DataError", "EvalIndex", "FilterReport", "PairSet", "SAFETY_BENIGN_SETS",
           "SAFETY_HARMFUL_SETS", "available", "axis_pairs", "data_file", "decontaminate", "load", "load_alignx",
           "load_alpaca", "load_beavertails", "load_model_outputs", "load_pair_file", "load_preference_dimensions",
           "load_safety_eval", "load_safety_instructions", "load_sft_file", "load_truthfulqa", "load_truthfulqa_mc",
           "normalize", "removed_counts", "resolve_data_dir", "seeded_split", "split_half", "split_truthfulqa_mc",
           "to_dataset"]
