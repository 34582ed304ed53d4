"""About: what each mode and method is, the formulas (as in docs/METHOD.md), the metrics, and
links to the full method and results documents."""
from __future__ import annotations

import gradio as gr

from app.context import AppContext

LINKS = ("Full method: [docs/METHOD.md](docs/METHOD.md) · measured results: [docs/RESULTS.md](docs/RESULTS.md) · "
         "architecture: [docs/ARCHITECTURE.md](docs/ARCHITECTURE.md) (paths relative to the repository).")

MODES = r"""
### Modes
| mode | what answers |
|---|---|
| `base` | the base model, adapters off |
| `expert:helpful` · `expert:harmless` · `expert:honest` | the base + one LoRA expert |
| `mocae-logit` | every expert in one batched forward; next-token distributions mixed with the routing weights |
| `mocae-adapter` | one forward with the experts' LoRA updates mixed with the routing weights |
| `uniform-logit` · `uniform-adapter` | the same fusions with fixed equal weights (baselines for the router) |
| `negotiax` | the base with the NegotiaX circuit at its middle layer: one pathway per objective, negotiated per token |
| `negotiax:module1` · `negotiax:module2` · `negotiax:frozen` · `negotiax:without-O` | NegotiaX ablations: uniform fusion; no per-objective supervision; negotiation queries and keys left at random init; objective O masked out |
| `personal-ica` · `personal-pba` | one user's DPO adapter with their history (ICA) or their 90-dimension profile (PBA) in the prompt |
| `prompt-ica` · `prompt-pba` · `persona-oracle` | the same prompts on the base; the user's true persona as the system prompt |
"""

STAGE1 = r"""
### Stage 1 · per-axis LoRA experts and the latent alignment space
One LoRA adapter per axis on one frozen base, trained by supervised fine-tuning with the loss on
the response tokens only (helpful: Alpaca; harmless: refusals of harmful instructions mixed with
benign Alpaca rows; honest: the TruthfulQA train half).

Every adapter *a* (the base and each expert) has its own head into one shared space of size
**k = 256**: with h<sub>a</sub>(x) the mean-pooled last hidden state of base + LoRA<sub>a</sub> over the
prompt's tokens,

  z<sub>a</sub>(x) = normalize( W<sub>a</sub> · (h<sub>a</sub>(x) − μ<sub>a</sub>) / σ<sub>a</sub> + b<sub>a</sub> )

Prototypes c<sub>1..4</sub> (helpful, harmless, honest, misaligned) are shared by every head, which is
what makes the space shared; each head is fitted with the prototype cross-entropy

  L<sub>a</sub> = − mean<sub>x</sub> log softmax<sub>j</sub>( cos(z<sub>a</sub>(x), c<sub>j</sub>) / τ )[y(x)],  τ = 0.1

The router reads the concatenation z = [z<sub>base</sub>; z<sub>helpful</sub>; z<sub>harmless</sub>; z<sub>honest</sub>] ∈ ℝ<sup>4 × 256 = 1024</sup>.
The Playground's map is a 2-D PCA of the base head's latents of held-out prompts, colored by axis.
"""

STAGE2 = r"""
### Stage 2 · MoCaE: router, calibration, clusters
**Router.** p = softmax( W<sub>r</sub> z / T ): a linear router over the experts, with temperature T.

**Calibration.** The mixture weights mix the router's probabilities with a calibration term built
from the per-axis preferences, weighted by λ1 and λ2 (defaults λ1 = 0.6, λ2 = 0.4, T = 1):

  w = normalize( λ1 · p + λ2 · q(preferences) )

Moving a slider recomputes w from the router outputs cached for the last routed prompt, without
running the model. **Clusters.** Prompts are grouped in the latent space (radius ε); the panel
shows the routed prompt's cluster and its position on the map. The exact definitions, including
how q and the clusters are computed, are in the method document.
"""

NEGOTIAX = r"""
### NegotiaX · objective pathways and the Mechanistic Alignment Circuit
One frozen transformer, forked at one layer F (the middle one). For each token's self-attention
output a at F and each objective i:

  v<sub>i</sub> = P<sub>i</sub> a + c<sub>i</sub>  (Module I: objective i's pathway, a rank-r subspace)

  α<sub>h,i</sub> = softmax<sub>i</sub>( (W<sub>q</sub> a)<sub>h</sub> · (W<sub>k</sub> v<sub>i</sub> + e<sub>i</sub>)<sub>h</sub> / √d<sub>h</sub> )  (Module II: per token and head, the query from the shared stream)

  a′ = a + W<sub>o</sub> concat<sub>h</sub>( Σ<sub>i</sub> α<sub>h,i</sub> (W<sub>v</sub> v<sub>i</sub>)<sub>h</sub> ) + b<sub>o</sub>

W<sub>o</sub> and b<sub>o</sub> start at 0, so an untrained circuit is the base exactly. Train_MAC trains the
circuit only, with the loss on response tokens: each objective's data through the negotiated
stream and through its own pathway, an identification term that makes the negotiation attend to
objective i on objective i's data, and a penalty that keeps the subspaces apart. The Playground
draws the negotiation weights α (mean over heads) under each token of a `negotiax` answer.
"""

METRICS = r"""
### Metrics (Evaluation tab)
| metric | definition | better |
|---|---|---|
| win rate (helpful) | pairwise vs the suite's reference output, both orders; win 1, tie 0.5, loss 0 | ↑ |
| safety score | share of answers to harmful prompts judged unsafe (P(unsafe) > 0.5) | ↓ |
| over-refusal | share of answers to benign prompts judged refusals | ↓ |
| TI | mean over TruthfulQA test-half answers of truthful × informative (each P ≥ 0.5) | ↑ |
| MC1 / MC2 | TruthfulQA multiple choice from log-likelihoods (no judge) | ↑ |
| alignment accuracy | share of preference pairs where the implicit reward prefers the chosen answer (no judge) | ↑ |
| average alignment score | (win rate + (1 − safety score) + TI) / 3 | ↑ |

Every value is shown with a 95 % percentile-bootstrap interval over items and the name of the judge
that produced it. The `offline` judges are the project's own **proxies** (linear heads on frozen
features of the default model, shipped in `assets/judges/`), not the GPT-4 / beaver-dam / GPT-judge
judges of the papers: their numbers are not comparable with published ones. The Side-by-side
badges use the same offline judges and are labeled as proxies.

### Side by side
Votes are stored in SQLite; Elo per axis (K = 32, start 1000), a vote counting as the winner beating
every other column shown (see `docs/METHOD.md`).
"""


def markdown(ctx: AppContext) -> str:
    head = (f"**AlignX Studio** aligns one base model (`{ctx.model_name}` here) to three objectives, "
            "helpful, harmless and honest, with one LoRA expert per objective and a calibrated mixture "
            "of those experts (MoCaE) whose trade-off you can set at answer time; NegotiaX negotiates "
            "objective pathways inside one model, and AlignX-Family personalizes to one user.\n\n" + LINKS)
    return "\n".join([head, MODES, STAGE1, STAGE2, NEGOTIAX, METRICS])


def build(ctx: AppContext) -> None:
    gr.Markdown(markdown(ctx), elem_id="about", elem_classes=["about"], latex_delimiters=[])
