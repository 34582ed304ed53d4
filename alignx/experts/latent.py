"""The shared latent alignment space (k = 256), fitted on frozen features with axis supervision.

Features: for adapter a (``__base__`` or an expert), h_a(x) = mean over the chat-templated
tokens of x of the last hidden state of base+LoRA_a. Each adapter has its own head
z_a = normalize(W_a standardize_a(h_a) + b_a) in R^k. One set of prototypes c_1..c_4 (the
three axes + "misaligned") is shared by every head, which is what makes the space shared:

  L = CE( [cos(z, c_j) / tau]_j , y ),  tau = 0.1

y = the axis of a prompt, or "misaligned" for a prompt + unsafe (BeaverTails) or incorrect
(TruthfulQA) answer: the negatives. The base head and the prototypes are fitted first; each
expert head is then fitted with the prototypes frozen. The router reads the concatenation
[z_base; z_expert_1; ...] (D = 4 x 256 = 1024 for three experts).
"""
from __future__ import annotations

from alignx.errors import InvalidInput, MissingFile

import json
import random
from itertools import zip_longest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from alignx import data as D
from alignx import atomic, hooks, probes
from alignx.generation import BASE, chat_prompt_ids, model_lock
from alignx.models import native_bf16

K = 256
TAU = 0.1
NEGATIVE = "misaligned"
CLASSES = (*D.AXES, NEGATIVE)
Item = tuple[str, str | None]   # (prompt, optional assistant response)


def _ids(tokenizer, item: Item) -> list[int]:
    prompt, response = item
    ids = chat_prompt_ids(tokenizer, prompt)
    if response:
        ids = ids + tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids


@torch.inference_mode()
def features(model, tokenizer, items: Sequence[Item | str], adapters: Sequence[str] | None = None,
             batch_size: int = 16, max_length: int = 256) -> torch.Tensor:
    """(n_adapters, n_items, d) mean-pooled last hidden states; one batched forward per item batch."""
    items = [(x, None) if isinstance(x, str) else x for x in items]
    adapters = list(adapters or [BASE])
    is_peft = hasattr(model, "peft_config")
    if not is_peft and adapters != [BASE]:
        raise InvalidInput(f"adapters {adapters} need a peft model with those experts loaded")
    device = next(model.parameters()).device
    bf16 = device.type == "cpu" and native_bf16(device)
    last = hooks.hidden_state_name(model, -1)        # the final-norm output, HF's hidden_states[-1]
    out = []
    for s in range(0, len(items), batch_size):
        rows = [_ids(tokenizer, it)[:max_length] for it in items[s:s + batch_size]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows] * len(adapters), device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows] * len(adapters), device=device)
        kw = {"adapter_names": [a for a in adapters for _ in rows]} if is_peft else {}
        with model_lock(model), hooks.capture(model, last) as cache, \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1, **kw)   # logits_to_keep: skip the LM head
        hs = cache[last]
        pooled = (hs.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out.append(pooled.view(len(adapters), len(rows), -1).cpu())
    return torch.cat(out, dim=1)


@dataclass
class Head:
    """standardize -> linear d->k -> L2 normalize."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(((h - self.mean) / self.std) @ self.weight.T + self.bias, dim=-1)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": getattr(self, k).contiguous() for k in ("weight", "bias", "mean", "std")}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str) -> "Head":
        return cls(*(t[f"{prefix}.{k}"] for k in ("weight", "bias", "mean", "std")))


def fit_head(h: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor | None, k: int = K, steps: int = 300,
             lr: float = 1e-2, seed: int = 0) -> tuple[Head, torch.Tensor, float]:
    """Fit one head (and the prototypes when ``prototypes`` is None). Returns (head, prototypes, loss).

    x = (h - mean) / std, W ~ N(0, 1/d) (k x d), b = 0, prototypes ~ N(0, 1) drawn after W from the
    same seeded generator; L = CE(normalize(W x + b) . normalize(c_j) / tau, y), AdamW(lr, 1e-4)."""
    g = torch.Generator().manual_seed(seed)
    mean, std = h.mean(0), h.std(0).clamp_min(1e-4)
    x = (h - mean) / std
    learn_protos = prototypes is None
    fixed = None if learn_protos else prototypes.detach()

    def cosine_logits(x, w, b, *learned):
        return F.normalize(F.linear(x, w, b), dim=-1) @ F.normalize(learned[0] if learned else fixed, dim=-1).T / TAU

    fit = probes.fit_linear(
        x, y, k, init=lambda shape: torch.randn(*shape, generator=g) / shape[1] ** 0.5,
        extra=lambda: [torch.nn.Parameter(torch.randn(len(CLASSES), k, generator=g))] if learn_protos else [],
        logits_fn=cosine_logits, optimizer="adamw", steps=steps, lr=lr, weight_decay=1e-4)
    protos = fit.extra[0] if learn_protos else fixed
    return Head(fit.weight, fit.bias, mean, std), F.normalize(protos, dim=-1), fit.loss


def _sample(rows: list, n: int, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _beavertails_halves(data_dir, seed: int) -> tuple[list, list]:
    """BeaverTails shuffled once (``seed``) and split in two: the training half (latent heads'
    negatives, v1 harmless prompts) and the held-out half (held-out harmless prompts)."""
    return D.split_half(_sample(D.load_beavertails(data_dir=data_dir), 10**6, seed))


H3FUSION_HELPFUL_N = 50     # the first AlpacaEval instructions: H3Fusion's helpfulness set, never trained on
HELDOUT_MAX = 200           # held-out prompts per axis at most; their whole reserve is never trained on


def heldout_prompts(data_dir=None, per_axis: int = 100, seed: int = 0) -> tuple[list[str], list[str]]:
    """Prompts no expert, head or router was fitted on: AlpacaEval instructions (helpful), the
    harmful safety evaluation sets + the held-out half of BeaverTails (harmless), TruthfulQA test half (honest)."""
    if not 0 < per_axis <= HELDOUT_MAX:
        raise InvalidInput(f"heldout per_axis must be in 1..{HELDOUT_MAX}, got {per_axis}")
    ref = D.resolve_data_dir(data_dir) / D.paths.FILES["alpaca_eval_reference"]
    helpful = [r.prompt for r in D.load_model_outputs(ref)]
    harmful = [r.prompt for n in D.SAFETY_HARMFUL_SETS for r in D.load_safety_eval(n, data_dir=data_dir)]
    harmful += [r.prompt for r in _beavertails_halves(data_dir, seed)[1]]
    honest = [r.prompt for r in D.split_half(D.load_truthfulqa(data_dir=data_dir))[1]]
    prompts, labels = [], []
    for axis, rows in (("helpful", helpful), ("harmless", harmful), ("honest", honest)):
        chosen = _sample(rows, per_axis, seed + 1)
        prompts += chosen
        labels += [axis] * len(chosen)
    return prompts, labels


ROUTER_SOURCES = ("v1", "v2")
# v2: the second-wave prompt sources per axis (registry names; "truthfulqa_train_half" is the
# TruthfulQA training half). OKTest and CoCoNot-pref prompts (benign requests with harmful-looking
# words, to be complied with) join helpful so that wording alone does not send a prompt to harmless.
V2_SOURCES: dict[str, tuple[str, ...]] = {
    "helpful": ("alpaca_31k", "lima", "gsm8k", "hh_helpful", "oktest", "coconot_pref"),
    "harmless": ("advbench", "strongreject", "tdc2023", "harmbench_val", "catqa", "dangerousqa", "harmfulqa",
                 "do_not_answer", "pku_pairs", "hh_harmless"),
    "honest": ("selfaware", "simpleqa", "halueval", "truthfulqa_train_half"),
}
# Sources whose prompts are not all harmful (red-team openers, PKU's mixed prompts): a prompt is
# kept as harmless only if it holds a word of HARM_WORDS (``looks_harmful``); the rest are dropped.
NOISY_HARMLESS = ("hh_harmless", "pku_pairs")
HARM_WORDS = frozenset("""kill killing murder hurt harm attack bomb explosive explosives weapon weapons gun guns shoot
poison steal stealing stole rob robbery theft shoplift hack hacking hacker drug drugs cocaine heroin meth illegal
illegally crime criminal fraud scam counterfeit launder laundering blackmail kidnap torture abuse assault rape
racist racism slur slurs nigger hate violent violence terrorist terrorism suicide knife stab cheat cheating
smuggle traffic trafficking prostitute porn sexual nude fight punch beat revenge threaten threat insult insults
offensive dirty cuss curse swear fuck fucking shit bitch damn stupid idiot dumb ugly fat lie lying spy stalk
arson burn vandalize break destroy dangerous lethal overdose bully harass harassment discriminate
""".split())


def looks_harmful(prompt: str) -> bool:
    """True when ``prompt`` holds a word of ``HARM_WORDS`` (lower-cased ``\\w+`` words)."""
    import re

    return bool(HARM_WORDS & set(re.findall(r"[a-z]+", prompt.lower())))


def _v2_records(name: str, data_dir, seed: int) -> list:
    from alignx.data.registry import load

    if name == "truthfulqa_train_half":
        return D.split_half(D.load_truthfulqa(data_dir=data_dir))[0]
    return load(name, data_dir, skip_bad=True)


def axis_prompt_pools(data_dir=None, seed: int = 0, removed: dict[str, int] | None = None,
                      sources: str = "v1") -> dict[str, list[list[str]]]:
    """Per axis, the training sources of its prompts, each shuffled, none holding an evaluation
    prompt (``alignx.data.decontam``: exact and near duplicates of every ``eval`` file removed).

    ``sources="v1"`` (what the shipped latent heads and router were fitted on):
    helpful: Alpaca instructions and HH-RLHF helpful-base first turns (Alpaca alone is formal
    one-line tasks, so a router fitted on it alone sends conversational requests to the harmless
    expert; AlpacaEval, which played that part before, is an evaluation file: never trained on);
    harmless: safety-tuned-llamas harmful instructions and the BeaverTails training-half prompts;
    honest: the TruthfulQA training half.
    ``sources="v2"``: ``V2_SOURCES``; ``NOISY_HARMLESS`` sources keep only ``looks_harmful``
    prompts (counted as ``"<source>:not_harmful"`` in ``removed``).
    ``removed`` (if given) receives the rows dropped per source."""
    from alignx.data.decontam import EvalIndex
    from alignx.data.registry import load

    if sources not in ROUTER_SOURCES:
        raise InvalidInput(f"unknown prompt sources {sources!r}; available: {', '.join(ROUTER_SOURCES)}")
    index = EvalIndex.build(data_dir)
    removed = removed if removed is not None else {}

    def clean(records, name: str) -> list[str]:
        kept, report = index.filter(records, name)
        removed[name] = report.removed
        return [r.prompt for r in kept]

    if sources == "v2":
        pools: dict[str, list[list[str]]] = {}
        for axis, names in V2_SOURCES.items():
            pools[axis] = []
            for name in names:
                prompts = clean(_v2_records(name, data_dir, seed), name)
                if name in NOISY_HARMLESS:
                    kept = [p for p in prompts if looks_harmful(p)]
                    removed[f"{name}:not_harmful"] = len(prompts) - len(kept)
                    prompts = kept
                pools[axis].append(prompts)
        return {axis: [_sample(list(dict.fromkeys(src)), 10**9, seed) for src in srcs] for axis, srcs in pools.items()}
    pools_v1 = {
        "helpful": [clean(D.load_alpaca(data_dir=data_dir, skip_bad=True), "alpaca"),
                    clean(load("hh_helpful", data_dir, skip_bad=True), "hh_helpful")],
        "harmless": [clean(D.load_safety_instructions(data_dir=data_dir, skip_bad=True), "safety_instructions"),
                     clean(_beavertails_halves(data_dir, seed)[0],
                           "beavertails_train_half")],
        "honest": [clean(D.split_half(D.load_truthfulqa(data_dir=data_dir))[0], "truthfulqa_train_half")],
    }
    return {axis: [_sample(list(dict.fromkeys(src)), 10**9, seed) for src in srcs] for axis, srcs in pools_v1.items()}


def axis_prompts(data_dir=None, per_axis: int = 150, seed: int = 0, part: int = 0,
                 removed: dict[str, int] | None = None, sources: str = "v1",
                 exclude: set[str] | None = None) -> tuple[list[str], list[str]]:
    """``per_axis`` prompts of each axis from half ``part`` of its sources (part 0: the latent
    heads', part 1: the router's, disjoint), taken round-robin over the sources; prompts in
    ``exclude`` are skipped (and a prompt labelled with two axes is kept under neither)."""
    prompts: list[str] = []
    labels: list[str] = []
    pools = axis_prompt_pools(data_dir, seed, removed, sources)
    seen: dict[str, set[str]] = {}
    for axis, srcs in pools.items():
        for src in srcs:
            for p in src:
                seen.setdefault(p, set()).add(axis)
    from alignx.data.decontam import normalize

    skip = {normalize(p) for p in exclude or ()}
    if sources != "v1":
        skip |= {normalize(p) for p, axes in seen.items() if len(axes) > 1}
    for axis, srcs in pools.items():
        halves = [[p for p in src[part::2] if not skip or normalize(p) not in skip] for src in srcs]
        mixed = [p for group in zip_longest(*halves) for p in group if p is not None]
        chosen = mixed[:per_axis]
        prompts += chosen
        labels += [axis] * len(chosen)
    return prompts, labels


def heldout_reserve(data_dir=None, seed: int = 0) -> set[str]:
    """Every prompt the held-out evaluations may draw: ``heldout_prompts`` at ``HELDOUT_MAX`` and
    the whole held-out BeaverTails half. v2 head and router prompts skip them (after
    ``alignx.data.decontam.normalize``)."""
    reserve = set(heldout_prompts(data_dir, HELDOUT_MAX, seed)[0])
    return reserve | {r.prompt for r in _beavertails_halves(data_dir, seed)[1]}


def train_items(data_dir=None, per_axis: int = 150, seed: int = 0,
                removed: dict[str, int] | None = None, sources: str = "v1") -> tuple[list[Item], list[str]]:
    """The latent heads' data: ``axis_prompts`` part 0 of ``sources`` (v2: the held-out reserve
    skipped), and negatives (prompt + unsafe BeaverTails answer, or TruthfulQA training-half
    question + incorrect answer)."""
    from alignx.data.decontam import EvalIndex

    index = EvalIndex.build(data_dir)
    exclude = heldout_reserve(data_dir, seed) if sources != "v1" else None
    prompts, labels = axis_prompts(data_dir, per_axis, seed, part=0, removed=removed, sources=sources,
                                   exclude=exclude)
    items: list[Item] = [(p, None) for p in prompts]
    tqa = index.filter(D.split_half(D.load_truthfulqa(data_dir=data_dir))[0])[0]
    bt_train = index.filter(_beavertails_halves(data_dir, seed)[0])[0]
    # (the negatives' sources are the v1 pools' own; their removals are counted there for v1)
    negatives = [(r.prompt, r.rejected) for r in bt_train] + [(r.prompt, r.rejected) for r in _sample(tqa, per_axis // 2, seed)]
    return items + negatives, labels + [NEGATIVE] * len(negatives)


def train_prompts(data_dir=None, per_axis: int = 150, seed: int = 0) -> tuple[list[str], list[str]]:
    """The axis prompts of ``train_items`` (no negatives)."""
    return axis_prompts(data_dir, per_axis, seed, part=0)


def router_prompts(data_dir=None, per_axis: int = 250, seed: int = 0,
                   removed: dict[str, int] | None = None, sources: str = "v1") -> tuple[list[str], list[str]]:
    """The router's training prompts: ``axis_prompts`` part 1, disjoint from the latent heads'
    (with ``sources="v2"``, every prompt of the v1 sources' part 0, which the shipped heads
    were fitted on, and every prompt of the held-out reserve -- ``heldout_prompts`` at
    ``HELDOUT_MAX`` and the whole held-out BeaverTails half -- are excluded as well, equal after
    ``alignx.data.decontam.normalize``)."""
    exclude = None
    if sources != "v1":
        v1 = axis_prompt_pools(data_dir, seed, None, "v1")
        exclude = {p for srcs in v1.values() for src in srcs for p in src[0::2]} | heldout_reserve(data_dir, seed)
    return axis_prompts(data_dir, per_axis, seed, part=1, removed=removed, sources=sources, exclude=exclude)


def rows_per_source(prompts: list[str], data_dir, seed: int, sources: str) -> dict[str, int]:
    """How many of ``prompts`` come from each source of ``axis_prompt_pools`` (others: "extra")."""
    names = {"v1": {"helpful": ("alpaca", "hh_helpful"), "harmless": ("safety_instructions", "beavertails_train_half"),
                    "honest": ("truthfulqa_train_half",)}, "v2": V2_SOURCES}[sources]
    owner: dict[str, str] = {}
    for axis, srcs in axis_prompt_pools(data_dir, seed, None, sources).items():
        for name, src in zip(names[axis], srcs):
            for p in src:
                owner.setdefault(p, name)
    counts: dict[str, int] = {}
    for p in prompts:
        counts[owner.get(p, "extra")] = counts.get(owner.get(p, "extra"), 0) + 1
    return counts


@dataclass
class LatentSpace:
    heads: dict[str, Head]                  # BASE and each expert name
    prototypes: torch.Tensor                # (len(CLASSES), k), unit rows
    experts: list[str]
    card: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.prototypes.shape[1])

    @property
    def adapters(self) -> list[str]:
        return [BASE, *self.experts]

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """(n_adapters, n, d) features -> (n_adapters, n, k) unit latents, in ``adapters`` order."""
        return torch.stack([self.heads[a](f) for a, f in zip(self.adapters, feats)])

    def encode(self, model, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
        """The router input: (n, (1 + n_experts) * k), base block first."""
        z = self.project(features(model, tokenizer, list(prompts), self.adapters))
        return z.permute(1, 0, 2).reshape(len(prompts), -1)

    def base_latent(self, model, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
        return self.heads[BASE](features(model, tokenizer, list(prompts), [BASE])[0])

    def classify(self, z: torch.Tensor) -> list[str]:
        """Nearest prototype of unit latents z (n, k)."""
        return [CLASSES[i] for i in (z @ self.prototypes.T).argmax(-1).tolist()]

    def save(self, experts_dir: str | Path) -> None:
        """``latent/latent.safetensors`` (base head + prototypes), each expert's ``latent_head.safetensors``,
        then ``latent/card.json``; every file written atomically."""
        root = Path(experts_dir)
        atomic.save_safetensors(root / "latent" / "latent.safetensors",
                                dict(self.heads[BASE].tensors("base"), prototypes=self.prototypes.contiguous()))
        for name in self.experts:
            atomic.save_safetensors(root / name / "latent_head.safetensors", self.heads[name].tensors("head"))
        atomic.write_json(root / "latent" / "card.json", dict(self.card, experts=self.experts, k=self.k,
                                                              classes=list(CLASSES), tau=TAU))

    @classmethod
    def load(cls, experts_dir: str | Path) -> "LatentSpace":
        from safetensors.torch import load_file

        root = Path(experts_dir)
        path = root / "latent" / "latent.safetensors"
        if not path.exists():
            raise MissingFile(f"{path} is missing: fit the latent space with "
                                    f"`python -m alignx train-experts --latent-only --out {root}`")
        card = json.loads((root / "latent" / "card.json").read_text())
        t = load_file(path)
        heads = {BASE: Head.from_tensors(t, "base")}
        for name in card["experts"]:
            head_path = root / name / "latent_head.safetensors"
            if not head_path.exists():
                raise MissingFile(f"{head_path} is missing: refit the latent space (--latent-only)")
            heads[name] = Head.from_tensors(load_file(head_path), "head")
        return cls(heads, t["prototypes"], list(card["experts"]), card)


def nearest_centroid_accuracy(z_train: torch.Tensor, y_train: list[str], z_test: torch.Tensor,
                              y_test: list[str]) -> float:
    axes = sorted(set(y_train))
    cents = F.normalize(torch.stack([z_train[[i for i, y in enumerate(y_train) if y == a]].mean(0) for a in axes]), dim=-1)
    pred = [axes[i] for i in (F.normalize(z_test, dim=-1) @ cents.T).argmax(-1).tolist()]
    return sum(p == y for p, y in zip(pred, y_test)) / len(y_test)
