"""The embedded demo: the pipeline stages that exist so far, end to end on the synthetic world.

Same code as a cluster run: a real (embedded) Ray, the run directory with manifests, and the
reference teacher reached over HTTP with the real ``openai`` client. Stages still to be built
are listed at the end rather than faked.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from kard_ray.artifacts import RunDir
from kard_ray.config import KardConfig
from kard_ray.runtime import init_ray
from kard_ray.stages import data as data_stage
from kard_ray.stages import index as index_stage
from kard_ray.stages import kb as kb_stage

NOT_YET_BUILT = ["rationales (teacher on Ray Data)", "augment", "train_reranker", "train_student", "evaluate"]


def ask_reference_teacher(base_url: str, questions, n: int, temperature: float) -> list[list[str]]:
    """Rationales for a few questions through the real openai client."""
    from openai import OpenAI

    from kard_ray.data.schema import LETTERS

    client = OpenAI(base_url=base_url, api_key="not-needed-for-the-reference-teacher", max_retries=3)
    out = []
    for q in questions:
        options = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(q.options))
        resp = client.chat.completions.create(
            model="kard-reference-teacher",
            messages=[{"role": "user", "content": f"Question: {q.question}\nOptions:\n{options}\n"
                                                   f"Answer: ({q.answer_letter})\nExplain step by step."}],
            n=n,
            temperature=temperature,
        )
        out.append([c.message.content or "" for c in resp.choices])
    return out


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

    if cfg.teacher.reference:
        from kard_ray.teacher.reference_server import ReferenceTeacherServer

        train = data_stage.read_split(run, "train")[:3]
        test = data_stage.read_split(run, "test")
        with ReferenceTeacherServer(run.uri_of(data_stage.WORLD_DIR)) as server:
            rationales = ask_reference_teacher(server.base_url, train, n=2, temperature=cfg.teacher.temperature)
            oracle = [rs[0] for rs in ask_reference_teacher(server.base_url, test, n=1, temperature=0.0)]
            stats = server.stats()
        table = Table("question", "gold", "reference-teacher rationale (1 of 2)", title="Reference teacher")
        for q, rs in zip(train, rationales):
            table.add_row(q.question, f"({q.answer_letter}) {q.answer_text}", rs[0])
        console.print(table)
        console.print(f"reference teacher served {stats['requests']} requests, "
                      f"billed {stats['completion_tokens']} completion tokens")
        console.print(knowledge_gap_table(cfg, run, test, oracle))
    console.print(f"[yellow]not built yet:[/] {', '.join(NOT_YET_BUILT)}")
    console.print(f"demo finished in {time.time() - t0:.1f}s; run directory: {run.uri}")
