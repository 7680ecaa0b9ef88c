"""The embedded demo: the pipeline stages that exist so far, end to end on the synthetic world.

Same code as a cluster run: a real (embedded) Ray, the run directory with manifests, and the
reference teacher (its own process on 127.0.0.1) reached over HTTP by the real ``openai`` client
from Ray Data actors. Stages still to be built
are listed at the end rather than faked.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from kard_ray.artifacts import RunDir
from kard_ray.config import KardConfig
from kard_ray.runtime import init_ray
from kard_ray.stages import augment as augment_stage
from kard_ray.stages import data as data_stage
from kard_ray.stages import index as index_stage
from kard_ray.stages import kb as kb_stage
from kard_ray.stages import rationales as rationales_stage
from kard_ray.stages import train_reranker as train_reranker_stage

NOT_YET_BUILT = ["train_student", "evaluate"]


def knowledge_gap_table(cfg: KardConfig, run: RunDir, questions, rationales: list[str]) -> Table:
    """Recall of the needed facts on unseen-entity test questions: BM25 with the question vs the rationale.

    The gap between the rows is what KARD's reranker is trained to close. Retrieval runs as a
    Ray Data batch stage, as it does in the pipeline.
    """
    import ray

    from kard_ray.data.text import contains_fact
    from kard_ray.retrieval.batch import retrieve_dataset
    from kard_ray.retrieval.open import open_passages

    ks = cfg.eval.recall_at
    store = open_passages(run.uri)
    rows = [{"i": i, "query": q.question} for i, q in enumerate(questions)]
    rows += [{"i": i, "query": r, "rationale": True} for i, r in enumerate(rationales)]
    ds = ray.data.from_items([{"rationale": False, **r} for r in rows])
    hits = retrieve_dataset(ds, run.uri, cfg.retrieval, k=max(ks), method="bm25").take_all()
    table = Table("BM25 query", *[f"recall@{k}" for k in ks], title="Knowledge gap on unseen-entity test questions")
    for label, is_rationale in (("question only", False), ("teacher rationale (oracle)", True)):
        mine = [h for h in hits if h["rationale"] == is_rationale]
        cells = []
        for k in ks:
            found = []
            for h in mine:
                texts = store.texts(list(h["rows"][:k]))
                found += [any(contains_fact(t, f) for t in texts) for f in questions[h["i"]].facts]
            cells.append(f"{sum(found) / max(len(found), 1):.2f}")
        table.add_row(label, *cells)
    return table


def reranker_table(gap: dict) -> Table:
    """The trained reranker against question-only BM25 on held-out questions, with the candidate ceiling."""
    facts = gap["gold_facts"]
    ks = [k for k in next(iter(facts.values())) if k.startswith("recall@")]
    table = Table("retrieval with the question", *ks,
                  title=f"Reranker on {gap['questions']} unseen-entity test questions (needed facts)")
    for method, vals in facts.items():
        if method != "candidate_ceiling":
            table.add_row(method, *[f"{vals[k]:.2f}" for k in ks])
    (ceiling_k, ceiling), = facts["candidate_ceiling"].items()
    table.caption = f"candidate ceiling ({gap['first_stage']}, {ceiling_k}): {ceiling:.2f}"
    return table


def run_demo(cfg: KardConfig, address: str | None = None, force: bool = False, console: Console | None = None):
    console = console or Console()
    t0 = time.time()
    runtime = init_ray(cfg.ray, address)
    console.print(f"[bold]Ray[/] {runtime.mode} at {runtime.address} ({runtime.cpus:.0f} logical CPUs)")
    run = RunDir(cfg.run_dir)
    run.save_config(cfg)
    manifest = data_stage.run(cfg, run, force=force)
    console.print(f"[bold]data[/] {manifest['counts']}  ->  {run.uri_of(data_stage.STAGE)}")

    for stage in (kb_stage, index_stage):
        m = stage.run(cfg, run, force=force)
        console.print(f"[bold]{stage.STAGE}[/] {m['counts']}")

    m = rationales_stage.run(cfg, run, force=force)
    console.print(f"[bold]rationales[/] {m['counts']}  teacher accuracy {m['extra']['teacher_accuracy']}, "
                  f"billed this run {m['extra']['tokens_billed_this_run']}")
    rationales = run.read_table(f"{rationales_stage.STAGE}/rationales.parquet").to_pylist()
    first = {}
    for r in rationales:
        first.setdefault(r["qid"], r["rationale"])
    train = data_stage.read_split(run, "train")[:3]
    table = Table("question", "gold", "teacher rationale (sample 0)", title=f"Teacher: {cfg.teacher.model}")
    for q in train:
        table.add_row(q.question, f"({q.answer_letter}) {q.answer_text}", first.get(q.id, "-"))
    console.print(table)
    test = [q for q in data_stage.read_split(run, "test") if q.id in first]
    console.print(knowledge_gap_table(cfg, run, test, [first[q.id] for q in test]))

    m = augment_stage.run(cfg, run, force=force)
    console.print(f"[bold]augment[/] {m['counts']} candidates per pair {m['extra']['candidates_per_pair']}")
    m = train_reranker_stage.run(cfg, run, force=force)
    console.print(f"[bold]train_reranker[/] {m['counts']}, final loss {m['extra']['final_loss']:.3f}, "
                  f"{m['extra']['pairs_per_s']:.1f} pairs/s")
    console.print(reranker_table(m["extra"]["knowledge_gap"]))
    console.print(f"[yellow]not built yet:[/] {', '.join(NOT_YET_BUILT)}")
    console.print(f"demo finished in {time.time() - t0:.1f}s; run directory: {run.uri}")
