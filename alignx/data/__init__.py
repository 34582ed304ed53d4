"""Data: loaders for every source -> ``AlignRecord``, data-directory resolution, splits."""
from alignx.data.loaders import (load_alignx, load_alpaca, load_beavertails, load_model_outputs,
                                 load_preference_dimensions, load_safety_eval, load_safety_instructions,
                                 load_sft_file, load_truthfulqa, load_truthfulqa_mc)
from alignx.data.paths import data_file, resolve_data_dir
from alignx.data.records import AXES, AlignRecord, DataError, to_dataset
from alignx.data.splits import seeded_split, split_half, split_truthfulqa_mc

SAFETY_HARMFUL_SETS = ("I-CoNa", "I-Controversial", "I-PhysicalSafetyUnsafe")
SAFETY_BENIGN_SETS = ("I-Alpaca", "I-PhysicalSafetySafe")

__all__ = ["AXES", "AlignRecord", "DataError", "SAFETY_BENIGN_SETS", "SAFETY_HARMFUL_SETS", "data_file",
           "load_alignx", "load_alpaca", "load_beavertails", "load_model_outputs", "load_preference_dimensions",
           "load_safety_eval", "load_safety_instructions", "load_sft_file", "load_truthfulqa", "load_truthfulqa_mc",
           "resolve_data_dir", "seeded_split", "split_half", "split_truthfulqa_mc", "to_dataset"]
