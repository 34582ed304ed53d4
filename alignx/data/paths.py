"""Find the data directory: explicit argument, then $ALIGNX_DATA_DIR, then ../shared/data near the repo."""
from __future__ import annotations

from alignx.errors import MissingFile

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    candidates = []
    if data_dir:
        candidates.append(Path(data_dir).expanduser())
    elif os.environ.get("ALIGNX_DATA_DIR"):
        candidates.append(Path(os.environ["ALIGNX_DATA_DIR"]).expanduser())
    else:
        candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise MissingFile(
        f"data directory {candidates[0]} does not exist: pass --data-dir or set ALIGNX_DATA_DIR "
        f"(the project expects ../shared/data beside the checkout)")


# Relative paths of the files the project reads inside a data directory.
FILES = {
    "alpaca": "alpaca/alpaca_data_union_subset.json",
    "beavertails": "beavertails/beavertails_30k_train_sample.csv",
    "safety_train": "safety_tuned_llamas/training/safety_only_data_Instructions.json",
    "safety_eval": "safety_tuned_llamas/evaluation",
    "truthfulqa_csv": "truthfulqa/v1/TruthfulQA.csv",
    "truthfulqa_mc": "truthfulqa/v1/mc_task.json",
    "truthfulqa_finetune_truth": "truthfulqa/finetune_truth.jsonl",
    "truthfulqa_finetune_info": "truthfulqa/finetune_info.jsonl",
    "alpaca_eval_reference": "alpaca_eval/text_davinci_003_model_outputs.json",
    "h3fusion_reference": "h3fusion/reference_model.json",
    "psoups": "alignx/P-Soups",
    "preference_dimensions": "alignx/preference_dimensions_90.json",
    # second wave (DATA.md "Sources (second wave)")
    "xstest": "xstest/xstest_prompts.csv",
    "coconot_pref": "coconot/coconot_pref.jsonl",
    "coconot_contrast": "coconot/coconot_contrast_eval.jsonl",
    "coconot_eval": "coconot/coconot_eval.jsonl",
    "oktest": "oktest/OKTest.csv",
    "pku_pairs": "pku_saferlhf/pku_seferlhf_realign_dpo_5k.json",
    "pku_labelled": "pku_saferlhf/safe_rlhf_test_labelled_guardreasoner.json",
    "beavertails_30k_test": "beavertails/beavertails_30k_test_guardreasoner.json",
    "hh_harmless": "hh_rlhf/harmless-base_test.jsonl.gz",
    "hh_helpful": "hh_rlhf/helpful-base_test.jsonl.gz",
    "do_not_answer": "do_not_answer/data_en.csv",
    "rd_alpaca": "refusal_direction/alpaca.json",
    "advbench": "refusal_direction/advbench.json",
    "strongreject": "refusal_direction/strongreject.json",
    "tdc2023": "refusal_direction/tdc2023.json",
    "harmbench_val": "harmbench/harmbench_behaviors_text_val.csv",
    "harmbench_test": "harmbench/harmbench_behaviors_text_test.csv",
    "catqa": "red_instruct/catqa_english.json",
    "dangerousqa": "red_instruct/dangerousqa.json",
    "harmfulqa": "red_instruct/harmfulqa.json",
    "simplesafetytests": "simplesafetytests/simplesafetytests.csv",
    "lima": "lima/lima.json",
    "gsm8k": "gsm8k/test.jsonl",
    "arena_hard": "arena_hard/question.jsonl",
    "selfaware": "selfaware/SelfAware.json",
    "simpleqa": "simpleqa/simple_qa_test_set.csv",
    "halueval": "halueval/qa_one-turn_data.json",
    "truthfulqa_2025_csv": "truthfulqa/TruthfulQA.csv",
    "truthfulqa_2025_mc": "truthfulqa/mc_task.json",
    "alpaca_eval": "alpaca_eval",
    "roles": "ROLES.json",
}


def data_file(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    root = resolve_data_dir(data_dir)
    path = root / FILES[name]
    if not path.exists():
        raise MissingFile(f"{path} is missing from the data directory {root}")
    return path
