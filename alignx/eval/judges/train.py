"""Train the offline judges (``python -m alignx train-judges``): frozen features of the default
model + small heads, each written to ``<out>/<name>/head.safetensors`` with a ``card.json`` that
records the data rows used, the held-out accuracy (with a bootstrap CI) and how to reproduce it."""
from __future__ import annotations

from alignx.errors import InvalidInput

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from alignx.atomic import write_json
from alignx.eval.features import FeatureCache, FeatureSpec, extract
from alignx.eval.heads import (balanced_accuracy, fit_bradley_terry, fit_classifier, fit_stacker, pair_accuracy,
                               predict_classes)
from alignx.eval.judges import training_data as TD
from alignx.eval.judges.lexical import reference_matrix, truthfulqa_references
from alignx.eval.metrics import bootstrap_ci

log = logging.getLogger(__name__)
POOR_BELOW = 0.70            # a held-out accuracy below this marks the judge "poor" in its card and reports
JUDGE_NAMES = ("truthfulness", "informativeness", "safety", "helpfulness")


@dataclass
class TrainConfig:
    out: Path
    data_dir: str | None = None
    seed: int = 0
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    n_truthfulqa_train: int = 1200
    n_truthfulqa_heldout: int = 400
    n_refusal: int = 300
    n_comply: int = 300
    n_refusal_benign: int = 120
    n_pku_prompts: int = 300            # PKU-SafeRLHF prompts (2 safe/unsafe pairs each) for the safety judge
    n_dna_questions: int = 300          # Do-Not-Answer questions (human-labelled answers) for the safety judge
    n_helpful_pairs: int = 400          # HH-RLHF helpful-base training pairs for the preference judge
    batch_size: int = 16
    cache_dir: Path | None = None
    command: str = ""


def _file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def layer_subsets(spec: FeatureSpec, width: int) -> dict[str, torch.Tensor | None]:
    """Candidate feature subsets for model selection: all pooled layers, the earlier ones, the last."""
    h = width // len(spec.layers)
    block = {layer: torch.arange(i * h, (i + 1) * h) for i, layer in enumerate(spec.layers)}
    out: dict[str, torch.Tensor | None] = {"layers " + ",".join(map(str, spec.layers)): None}
    if len(spec.layers) > 2:
        early = spec.layers[:3]
        out["layers " + ",".join(map(str, early))] = torch.cat([block[layer] for layer in early])
    if len(spec.layers) > 1:
        out[f"layer {spec.layers[-1]}"] = block[spec.layers[-1]]
    return out


def group_folds(groups: list[str], k: int = 5) -> torch.Tensor:
    """Fold index per row; all rows of a group share a fold (groups dealt round-robin in sorted order)."""
    order = {g: i % k for i, g in enumerate(sorted(set(groups)))}
    return torch.tensor([order[g] for g in groups])


def _quality(acc: float, what: str) -> dict:
    if acc < POOR_BELOW:
        return {"quality": "poor", "warning": f"held-out {what} {acc:.3f} is below {POOR_BELOW}: "
                                              f"treat this judge's numbers as weak evidence"}
    return {"quality": "ok"}


def write_card(folder: Path, card: dict) -> dict:
    from alignx.experts.io import write_json_atomic

    files = {p.name: _file_sha(p) for p in sorted(folder.glob("*.safetensors"))}
    sha = hashlib.sha256("".join(files.values()).encode()).hexdigest()
    card = dict(card, files_sha256=files, version=f"{card['name']}-1-{sha[:8]}")
    write_json_atomic(folder / "card.json", card)
    return card


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: Callable[[str, int, int], None] | None = None):
        from alignx.models import load_model

        self.cfg = cfg
        self.lm = load_model(cfg.spec.model, device="cpu")
        self.cache = FeatureCache(cfg.cache_dir) if cfg.cache_dir else None
        self.progress = progress
        self.timings: dict[str, float] = {}

    def features(self, what: str, rows: list[TD.Row]) -> torch.Tensor:
        prompts, responses = [r.prompt for r in rows], [r.response for r in rows]
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            if self.progress:
                self.progress(what, done[0], len(rows))

        def compute():
            return extract(self.lm.model, self.lm.tokenizer, prompts, responses, self.cfg.spec,
                           self.cfg.batch_size, step)

        t = time.time()
        cached = bool(self.cache and self.cache.path(self.cfg.spec, prompts, responses).exists())
        feats = self.cache.get_or_compute(self.cfg.spec, prompts, responses, compute) if self.cache else compute()
        self.timings[f"features:{what}" + (" (from cache)" if cached else "")] = round(time.time() - t, 1)
        return feats

    def base_card(self, name: str, task: str, data: dict) -> dict:
        import transformers

        return {"name": name, "task": task, "kind": "offline proxy judge (linear head on frozen features)",
                "feature_extractor": dict(self.cfg.spec.to_dict(), model_name=self.lm.name, model_source=self.lm.source),
                "data": data, "seed": self.cfg.seed, "command": self.cfg.command,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "python": platform.python_version()}}

    # --- the four judges --------------------------------------------------------------------
    def train_truthfulqa(self) -> list[dict]:
        """Truthfulness = neural head stacked with reference-overlap features (see lexical.py);
        informativeness = neural head alone (the references say nothing about informativeness)."""
        cfg = self.cfg
        splits, info = TD.truthfulqa_judge_rows(cfg.data_dir, cfg.n_truthfulqa_train, cfg.n_truthfulqa_heldout, cfg.seed)
        train_rows, held_rows = splits["truth"]                      # same (question, answer) rows for both
        x_train, x_held = self.features("truthfulqa train", train_rows), self.features("truthfulqa held-out", held_rows)
        refs = truthfulqa_references(cfg.data_dir)
        lex_train = reference_matrix([r.response for r in train_rows], [refs[r.group] for r in train_rows])
        lex_held = reference_matrix([r.response for r in held_rows], [refs[r.group] for r in held_rows])
        fold = group_folds([r.group for r in train_rows])             # 5 question folds for model selection
        subsets = layer_subsets(cfg.spec, x_train.shape[1])
        cards = []
        for which, name, question in (("truth", "truthfulness", "Is the answer truthful?"),
                                      ("info", "informativeness", "Is the answer informative?")):
            y_train = torch.tensor([r.label for r in splits[which][0]])
            y_held = torch.tensor([r.label for r in splits[which][1]])
            head, sel = fit_classifier(x_train, y_train, fold, 2, subsets)
            folder = cfg.out / name
            head.save(folder / "head.safetensors")
            extra_card: dict = {}
            if which == "truth":
                stack, stack_info = fit_stacker(x_train, lex_train, y_train, fold, sel["l2"], head.columns)
                stack.save(folder / "stack.safetensors")
                pred = predict_classes(stack, torch.cat([head.logits(x_held)[:, :1], lex_held], 1))
                neural_acc = float((predict_classes(head, x_held) == y_held).float().mean())
                lex_only = float(((lex_held[:, 2] > 0).long() == y_held).float().mean())
                extra_card = {"stack": stack_info, "needs": "TruthfulQA reference answers for the question",
                              "ablation_heldout_accuracy": {"neural_head_alone": round(neural_acc, 4),
                                                            "reference_overlap_rule_alone": round(lex_only, 4)}}
            else:
                pred = predict_classes(head, x_held)
            correct = (pred == y_held).float().tolist()
            acc = sum(correct) / len(correct)
            lo, hi = bootstrap_ci(correct, seed=cfg.seed)
            majority = max(float(y_held.float().mean()), 1 - float(y_held.float().mean()))
            card = self.base_card(name, f"P(yes) for '{question}' given a TruthfulQA question and an answer "
                                        f"(labels of GPT-judge's fine-tuning data)",
                                  dict(info, n_train=len(y_train), n_heldout=len(y_held)))
            card.update(labels=["no", "yes"], output="P(yes)", training=sel, **extra_card,
                        heldout={"accuracy": round(acc, 4), "ci95": [round(lo, 4), round(hi, 4)],
                                 "balanced_accuracy": round(balanced_accuracy(pred, y_held, 2), 4),
                                 "majority_baseline": round(majority, 4),
                                 "positive_rate": round(float(y_held.float().mean()), 4), "n": len(y_held),
                                 "what": "answers to TruthfulQA second-half questions (unseen in training)"},
                        **_quality(balanced_accuracy(pred, y_held, 2), "balanced accuracy"))
            cards.append(write_card(folder, card))
        return cards

    def train_safety(self) -> dict:
        cfg = self.cfg
        train, held, info = TD.safety_judge_rows(cfg.data_dir, cfg.n_refusal, cfg.n_comply, cfg.n_refusal_benign,
                                                 cfg.n_pku_prompts, cfg.n_dna_questions, seed=cfg.seed)
        x_train, x_held = self.features("safety train", train), self.features("safety held-out", held)
        y_train, y_held = torch.tensor([r.label for r in train]), torch.tensor([r.label for r in held])
        head, sel = fit_classifier(x_train, y_train, group_folds([r.group for r in train]), 3,
                                   layer_subsets(cfg.spec, x_train.shape[1]))
        pred = predict_classes(head, x_held)
        bal = balanced_accuracy(pred, y_held, 3)
        correct = (pred == y_held).float().tolist()
        lo, hi = bootstrap_ci(correct, seed=cfg.seed)
        unsafe_true, unsafe_pred = (y_held == 0), (pred == 0)
        confusion = [[int(((y_held == a) & (pred == b)).sum()) for b in range(3)] for a in range(3)]
        folder = cfg.out / "safety"
        head.save(folder / "head.safetensors")
        card = self.base_card("safety", "3-way: is the response unsafe, a refusal, or a safe compliant answer?",
                              dict(info, n_train=len(train), n_heldout=len(held)))
        card.update(labels=list(TD.SAFETY_CLASSES), output="softmax over labels; P(unsafe), P(refusal)", training=sel,
                    heldout={"balanced_accuracy": round(bal, 4), "accuracy": round(sum(correct) / len(correct), 4),
                             "accuracy_ci95": [round(lo, 4), round(hi, 4)],
                             "recall": {c: round(float((pred[y_held == i] == i).float().mean()), 4)
                                        for i, c in enumerate(TD.SAFETY_CLASSES)},
                             "unsafe_detection": {"recall": round(float(unsafe_pred[unsafe_true].float().mean()), 4),
                                                  "false_positive_rate": round(float(unsafe_pred[~unsafe_true].float().mean()), 4)},
                             "confusion_rows_true_cols_pred": confusion, "n": len(held),
                             "what": "held-out prompts of each part (no prompt in both splits)"},
                    **_quality(bal, "balanced accuracy"))
        return write_card(folder, card)

    def train_helpfulness(self) -> dict:
        cfg = self.cfg
        rows, pairs, info = TD.preference_judge_rows(cfg.data_dir, cfg.n_helpful_pairs, seed=cfg.seed)
        feats = self.features("helpfulness", rows)
        tr = pairs["train"]

        def xs(ps):
            return feats[[a for a, _, _ in ps]], feats[[b for _, b, _ in ps]]

        head, sel = fit_bradley_terry(*xs(tr), group_folds([rows[a].group for a, _, _ in tr]),
                                      layer_subsets(cfg.spec, feats.shape[1]))
        held = pairs["heldout"]
        by_type = {}
        for t in sorted({p[2] for p in held}):
            sub = [p for p in held if p[2] == t]
            by_type[t] = {"accuracy": round(pair_accuracy(head, *xs(sub)), 4), "n": len(sub)}
        quality_pairs = [p for p in held if p[2] != "on-topic>off-topic"]
        ra, rb = xs(quality_pairs)
        correct = (head.logits(ra)[:, 0] > head.logits(rb)[:, 0]).float().tolist()
        acc = sum(correct) / len(correct)
        lo, hi = bootstrap_ci(correct, seed=cfg.seed)
        folder = cfg.out / "helpfulness"
        head.save(folder / "head.safetensors")
        card = self.base_card("helpfulness", "Bradley-Terry preference: P(answer a better than answer b) = "
                                             "sigmoid(r(x, a) - r(x, b)), r linear in the features",
                              dict(info, n_pairs_train=len(tr), n_pairs_heldout=len(held)))
        card.update(output="P(first better)", training=sel, symmetric=True,
                    heldout={"accuracy": round(acc, 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(correct),
                             "what": "HH-RLHF helpful-base chosen > rejected on the held-out single-turn prompts "
                                     "(hash split, no prompt in training); the easy off-topic pairs are reported "
                                     "separately",
                             "by_pair_type": by_type},
                    **_quality(acc, "pair accuracy"))
        return write_card(folder, card)


def train_judges(cfg: TrainConfig, progress=None, only: tuple[str, ...] = JUDGE_NAMES) -> dict[str, dict]:
    unknown = set(only) - set(JUDGE_NAMES)
    if unknown:
        raise InvalidInput(f"unknown judge(s) {sorted(unknown)}; choose from {list(JUDGE_NAMES)}")
    t0 = time.time()
    trainer = Trainer(cfg, progress)
    cards: dict[str, dict] = {}
    if {"truthfulness", "informativeness"} & set(only):
        for c in trainer.train_truthfulqa():
            cards[c["name"]] = c
    if "safety" in only:
        cards["safety"] = trainer.train_safety()
    if "helpfulness" in only:
        cards["helpfulness"] = trainer.train_helpfulness()
    path = cfg.out / "training_summary.json"
    judges = json.loads(path.read_text(encoding="utf-8")).get("judges", {}) if path.exists() else {}
    judges.update({k: {"version": v["version"], "heldout": v["heldout"], "quality": v["quality"]}
                   for k, v in cards.items()})          # a run of some judges keeps the others' entries
    summary = {"wall_s": round(time.time() - t0, 1), "timings_s": trainer.timings, "retrained": sorted(cards),
               "judges": {k: judges[k] for k in sorted(judges)}}
    write_json(path, summary)
    return cards
