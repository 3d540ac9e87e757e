"""Every generation sampler's LLM code, in one module (DESIGN.md sections 3 and 4).

Each sampler is a product-mixture spec of bandit/spec.py (`sampler_spec`): its tilts are the components whose
responses a row carries, and `generate_batch` realises them with a backend (generation/backend.py):

    offline    K responses from pi_ref                                    "ref"
    on_policy  K responses from pi                                        "policy"
    gshf       K/2 from pi_ref, K/2 from pi                               "ref", "policy"
    mix_p      per-token fused logits, K/2 from (1+a) l_pi - a l_ref      "mix+"
               and K/2 from (1-a) l_pi + a l_ref (a = alpha)              "mix-"
    mix_p_seq  the same tilts by sequence-level importance resampling:    "mixseq+", "mixseq-"
               M candidates from pi, K/2 kept with weights (pi/pi_ref)^{+a}, K/2 with (pi/pi_ref)^{-a}
    borda      AE-Borda: K/2 from pi and K/2 from pi_ref per candidate    "policy", "ref"
               prompt, then scored (selection/borda.py) and the most uncertain prompts kept
The on-policy pair option adds ONLINE_PAIR responses from pi ("policy"), which the annotation mixes in.
"""
from __future__ import annotations

from bandit.spec import POLICY, REF, SPECS, Branch, PairSpec, Tilt, mix_p_llm
from alignment.generation.backend import batch_seed
from bandit.vocabulary import PAIR_SAMPLER, names

SAMPLERS = names(PAIR_SAMPLER, "alignment")  # offline, on_policy, gshf, mix_p, mix_p_seq, borda
VLLM_SAMPLERS = ("offline", "on_policy", "gshf", "mix_p_seq")  # borda scores with MC dropout: HF only
PAIRED = ("gshf", "mix_p", "mix_p_seq", "borda")  # K is split in two halves
COMPONENTS = ("ref", "policy", "mix+", "mix-", "mixseq+", "mixseq-")
ONLINE_PAIR = 2  # responses from pi added by the on-policy pair option (generate --mixp-online-pair)


def sampler_spec(sampler: str, alpha: float = 0.5) -> PairSpec:
    """The product-mixture spec (bandit/spec.py) a generation sampler realises. Its tilts are the components
    drawn: by per-token fused decoding (exact for one-token responses), or for mix_p_seq by sequence-level
    resampling of candidates from pi. The bandit computes the same spec's exact pair weight (spec_weights)."""
    if sampler in ("mix_p", "mix_p_seq"):
        return mix_p_llm(alpha, name=sampler)
    if sampler == "borda":  # candidates from pi and pi_ref; the Borda scores then keep prompts and pick the pair
        return PairSpec("borda", (Branch(POLICY, REF, 1.0),))
    return SPECS[sampler]


def _label(sampler: str, index: int, tilt: Tilt) -> str:
    """A component's name in generations.jsonl: ref, policy, or mix+/mix- (fused), mixseq+/mixseq- (resampled)."""
    if tilt in (REF, POLICY):
        return "ref" if tilt == REF else "policy"
    return ("mix" if sampler == "mix_p" else "mixseq") + ("+" if index == 0 else "-")


def component_tilts(sampler: str, alpha: float = 0.5, online_pair: bool = False) -> dict[str, Tilt]:
    """Component label -> the tilt its responses are drawn from. online_pair adds the on-policy spec's tilt, whose
    pair the annotation mixes in (annotate --rule mixed_max_min --p)."""
    tilts = {_label(sampler, i, t): t for i, t in enumerate(sampler_spec(sampler, alpha).tilts)}
    return tilts | ({"policy": POLICY} if online_pair else {})


def component_plan(sampler: str, k: int, online_pair: bool = False, alpha: float = 0.5) -> list[tuple[str, int]]:
    """[(component, responses per prompt)]: K split evenly over the spec's tilts, plus the on-policy pair."""
    tilts = component_tilts(sampler, alpha)
    plan = [(c, k // len(tilts)) for c in tilts]
    return plan + ([("policy", ONLINE_PAIR)] if online_pair else [])


def component_weights(component: str, alpha: float) -> dict[str, float]:
    """Model key -> weight of its logits in the per-token fusion that draws the component's tilt."""
    tilt = {"ref": REF, "policy": POLICY} | component_tilts("mix_p", alpha)
    return tilt[component].logit_weights()


def component_models(component: str) -> tuple[str, ...]:
    """The models a component's responses depend on."""
    return ("policy", "ref") if component.startswith("mixseq") else tuple(component_weights(component, 0.5))


def generate_batch(backend, plan, args, rows: list[dict], prompt_ids) -> tuple[list[dict], dict]:
    """Rows of generations.jsonl for one batch of prompts, and its counts."""
    import torch

    from alignment.generation.decoding import effective_sample_size, importance_weights, resample

    per_prompt = [{"responses": [], "components": [], "num_tokens": [], "finished": []} for _ in rows]
    first, size = rows[0]["id"], len(rows)
    stats = {"ess_plus": [], "ess_minus": []}
    tilts = component_tilts(plan.sampler, args.alpha, any(c == "policy" for c, _ in plan.components))

    def add(i, component, tokens, finished):
        r = per_prompt[i]
        r["responses"].append(backend.tok.decode(tokens, skip_special_tokens=True))
        r["components"].append(component)
        r["num_tokens"].append(len(tokens))
        r["finished"].append(bool(finished))
        if plan.sampler == "borda":
            r.setdefault("tokens", []).append(list(tokens))

    seq = [(c, n) for c, n in plan.components if c.startswith("mixseq")]
    if seq:
        cand = backend.draw_scored(prompt_ids, plan.candidates, batch_seed(args.seed, "candidates", first, size))
        lp = torch.tensor(cand.logprobs, dtype=torch.float64)  # [P, M, 2]
        w_plus, w_minus = importance_weights(lp[..., 0], lp[..., 1], args.alpha)
        stats["ess_plus"] = effective_sample_size(w_plus).tolist()
        stats["ess_minus"] = effective_sample_size(w_minus).tolist()
    for component, n in plan.components:
        if component.startswith("mixseq"):
            w = w_plus if component == "mixseq+" else w_minus
            g = torch.Generator().manual_seed(batch_seed(args.seed, component, first, size))
            idx = resample(w, n, generator=g).tolist()
            for i in range(len(rows)):
                for j in idx[i]:
                    add(i, component, cand.tokens[i][j], cand.finished[i][j])
            continue
        d = backend.draw(prompt_ids, tilts[component], n, batch_seed(args.seed, component, first, size))
        for i in range(len(rows)):
            for t, f in zip(d.tokens[i], d.finished[i]):
                add(i, component, t, f)
    if plan.sampler == "borda":
        from alignment.selection.borda import score_batch

        toks = {c: [[] for _ in rows] for c in ("policy", "ref")}
        for i, r in enumerate(per_prompt):
            for c, t in zip(r["components"], r.get("tokens", [])):
                toks[c][i].append(t)
        upper, lower = score_batch(backend.models["policy"], backend.models["ref"], prompt_ids, toks["policy"],
                                   toks["ref"], backend.tok.pad_token_id, args.borda_beta, args.borda_gamma,
                                   args.borda_passes, args.borda_dropout, batch_seed(args.seed, "borda", first, size))
        for r, u, l in zip(per_prompt, upper, lower):
            r["borda_upper"], r["borda_lower"] = u, l
    out = []
    for row, r in zip(rows, per_prompt):
        out.append({"id": row["id"], "prompt": row["prompt"], "responses": r["responses"],
                    "components": r["components"], "num_tokens": r["num_tokens"]})
        if plan.sampler == "borda":
            out[-1] |= {"borda_upper": r["borda_upper"], "borda_lower": r["borda_lower"]}
        stats.setdefault("finished", []).extend(zip(r["components"], r["num_tokens"], r["finished"]))
    if seq:
        stats["candidate_tokens"] = sum(len(t) for ts in cand.tokens for t in ts)
    return out, stats


