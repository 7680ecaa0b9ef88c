"""Generate, write and read the synthetic knowledge world.

People have a hometown and an occupation; towns lie in a region and are known for a product.
Questions need one fact (a person's town or trade) or two (the region or product of a person's
hometown, where the second fact never mentions the person, so retrieving with the question alone
cannot find it but retrieving with a rationale that names the town can). Dev and test questions
are about people who appear in no training question, so only retrieved knowledge can answer them.
Everything is a function of the seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kard_ray.config import SynthConfig
from kard_ray.data.questions import load_questions
from kard_ray.data.records import read_text
from kard_ray.data.schema import Question
from kard_ray.synth import vocabulary as V

SPLITS = ("train", "dev", "test")
# relation of each question kind's hops, and which attribute answers it
_CHAINS = {
    "born_town": (["born_in"], "town"),
    "occupation": (["occupation"], "occupation"),
    "born_region": (["born_in", "region"], "region"),
    "hometown_product": (["born_in", "known_for"], "product"),
}


@dataclass
class World:
    config: SynthConfig
    people: dict[str, dict[str, str]]  # name -> {town, occupation, split}
    towns: dict[str, dict[str, str]]  # name -> {region, product}
    regions: list[str]
    documents: list[dict[str, str]]  # {id, title, text}
    questions: dict[str, list[Question]]  # split -> questions
    chains: dict[str, list[list[str]]] = field(default_factory=dict)  # qid -> [[relation, subj, obj], ...]
    kb_sentences: dict[str, str] = field(default_factory=dict)  # "relation|subject" -> KB sentence


def _fact_vars(relation: str, subj: str, obj: str) -> dict[str, str]:
    return {
        "born_in": {"P": subj, "T": obj},
        "occupation": {"P": subj, "O": obj},
        "region": {"T": subj, "R": obj},
        "known_for": {"T": subj, "X": obj},
    }[relation]


def _choose_options(rng: random.Random, answer: str, pool: list[str], k: int = 4) -> tuple[list[str], int]:
    others = rng.sample([p for p in pool if p != answer], k - 1)
    options = others + [answer]
    rng.shuffle(options)
    return options, options.index(answer)


def generate_world(cfg: SynthConfig | None = None) -> World:
    cfg = cfg or SynthConfig()
    rng = random.Random(cfg.seed)
    taken: set[str] = set()
    cap = str.capitalize
    regions = V.unique_names(
        rng, cfg.regions, lambda: cap(V.invented_word(rng, 2)) + rng.choice(V.REGION_SUFFIXES), taken
    )
    town_names = V.unique_names(
        rng, cfg.towns, lambda: cap(V.invented_word(rng, 1)) + rng.choice(V.TOWN_SUFFIXES), taken
    )
    towns = {t: {"region": rng.choice(regions), "product": rng.choice(V.PRODUCTS)} for t in town_names}
    # every region and product that is an answer should also be a plausible distractor
    n_people = cfg.train_people + cfg.dev_people + cfg.test_people
    names = V.unique_names(
        rng,
        n_people,
        lambda: f"{cap(V.invented_word(rng, 2))} {cap(V.invented_word(rng, rng.choice([1, 2])))}",
        taken,
    )
    splits = ["train"] * cfg.train_people + ["dev"] * cfg.dev_people + ["test"] * cfg.test_people
    people = {
        n: {"town": rng.choice(town_names), "occupation": rng.choice(V.OCCUPATIONS), "split": s}
        for n, s in zip(names, splits)
    }

    # ---- knowledge base: one document per person and per town, one paragraph per statement
    kb_sentences: dict[str, str] = {}

    def state(relation: str, subj: str, obj: str) -> str:
        text = V.fix_articles(rng.choice(V.KB_TEMPLATES[relation]).format(**_fact_vars(relation, subj, obj)))
        kb_sentences[f"{relation}|{subj}"] = text
        return text

    documents: list[dict[str, str]] = []
    for i, (name, p) in enumerate(people.items()):
        paras = [state("born_in", name, p["town"]), state("occupation", name, p["occupation"])]
        k = min(cfg.distractors_per_person, len(V.PERSON_DISTRACTORS))
        paras += [d.format(P=name) for d in rng.sample(V.PERSON_DISTRACTORS, k)]
        if cfg.distractors_per_person and rng.random() < 0.5:
            friend = rng.choice(names)
            if friend != name:
                paras.append(V.FRIEND_DISTRACTOR.format(Q=friend, P=name, T=rng.choice(town_names)))
        rng.shuffle(paras)
        documents.append({"id": f"person-{i:05d}", "title": name, "text": "\n\n".join(paras)})
    for i, (town, t) in enumerate(towns.items()):
        paras = [state("region", town, t["region"]), state("known_for", town, t["product"])]
        paras += [d.format(T=town) for d in V.TOWN_DISTRACTORS[: min(cfg.distractors_per_person, 2)]]
        rng.shuffle(paras)
        documents.append({"id": f"town-{i:05d}", "title": town, "text": "\n\n".join(paras)})
    rng.shuffle(documents)

    # ---- questions
    pools = {
        "town": town_names,
        "occupation": V.OCCUPATIONS,
        "region": regions,
        "product": sorted(set(V.PRODUCTS)),
    }
    questions: dict[str, list[Question]] = {s: [] for s in SPLITS}
    chains: dict[str, list[list[str]]] = {}
    for name, p in people.items():
        town = towns[p["town"]]
        kinds: list[str] = []
        for _ in range(cfg.questions_per_person):
            family = V.TWO_HOP if rng.random() < cfg.two_hop_share else V.ONE_HOP
            kinds.append(rng.choice([k for k in family if k not in kinds]))
        for kind in kinds:
            relations, attr = _CHAINS[kind]
            values = {"town": p["town"], "occupation": p["occupation"], **town}
            answer = values[attr]
            chain = []
            for rel in relations:
                subj = name if rel in ("born_in", "occupation") else p["town"]
                obj = {"born_in": p["town"], "occupation": p["occupation"], "region": town["region"],
                       "known_for": town["product"]}[rel]
                chain.append([rel, subj, obj])
            options, idx = _choose_options(rng, answer, pools[attr])
            qid = f"{p['split']}-{len(questions[p['split']]):05d}"
            questions[p["split"]].append(
                Question(
                    id=qid,
                    question=rng.choice(V.QUESTION_TEMPLATES[kind]).format(P=name),
                    options=options,
                    answer=idx,
                    facts=[kb_sentences[f"{rel}|{subj}"] for rel, subj, _ in chain],
                    metadata={"dataset": "synthetic", "entity": name, "kind": kind, "hops": len(chain)},
                )
            )
            chains[qid] = chain
    return World(cfg, people, towns, regions, documents, questions, chains, kb_sentences)


def world_files(world: World) -> dict[str, bytes]:
    """kb.jsonl, {train,dev,test}.jsonl (the generic question format) and world.json (ground truth)."""

    def jsonl(rows: list[dict[str, Any]]) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()

    files = {"kb.jsonl": jsonl(world.documents)}
    for split, qs in world.questions.items():
        files[f"{split}.jsonl"] = jsonl([q.model_dump(exclude_none=True) for q in qs])
    truth: dict[str, Any] = {
        "description": "Synthetic knowledge world for KARD (kard-ray). Fictional; ground truth below.",
        "config": world.config.model_dump(),
        "people": world.people,
        "towns": world.towns,
        "regions": world.regions,
        "chains": world.chains,
    }
    files["world.json"] = json.dumps(truth, indent=1, ensure_ascii=False).encode()
    return files


def write_world(world: World, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in world_files(world).items():
        (out / name).write_bytes(data)
    return out


@dataclass
class LoadedWorld:
    """What the reference teacher needs: questions and the ground-truth chain behind each."""

    questions: dict[str, Question]
    chains: dict[str, list[list[str]]]


def load_world(path: str | Path) -> LoadedWorld:
    """Read a world folder (local path or URI)."""
    base = str(path).rstrip("/")
    try:
        truth = json.loads(read_text(f"{base}/world.json"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{base} is not a synthetic world (no world.json); create one with `kard synth`"
        ) from None
    questions: dict[str, Question] = {}
    for split in SPLITS:
        try:
            qs, _ = load_questions(f"{base}/{split}.jsonl", "generic")
        except FileNotFoundError:
            continue
        questions.update({q.id: q for q in qs})
    return LoadedWorld(questions=questions, chains=truth["chains"])
