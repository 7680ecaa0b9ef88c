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

NOT_YET_BUILT = ["kb + retrieval", "rationales (teacher on Ray Data)", "augment", "train_reranker",
                 "train_student", "evaluate"]


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


def run_demo(cfg: KardConfig, address: str | None = None, force: bool = False, console: Console | None = None):
    console = console or Console()
    t0 = time.time()
    runtime = init_ray(cfg.ray, address)
    console.print(f"[bold]Ray[/] {runtime.mode} at {runtime.address} ({runtime.cpus:.0f} logical CPUs)")
    run = RunDir(cfg.run_dir)
    run.save_config(cfg)
    manifest = data_stage.run(cfg, run, force=force)
    console.print(f"[bold]data[/] {manifest['counts']}  ->  {run.uri_of(data_stage.STAGE)}")

    if cfg.teacher.reference:
        from kard_ray.teacher.reference_server import ReferenceTeacherServer

        train = data_stage.read_split(run, "train")[:3]
        with ReferenceTeacherServer(run.uri_of(data_stage.WORLD_DIR)) as server:
            rationales = ask_reference_teacher(server.base_url, train, n=2, temperature=cfg.teacher.temperature)
            stats = server.stats()
        table = Table("question", "gold", "reference-teacher rationale (1 of 2)", title="Reference teacher")
        for q, rs in zip(train, rationales):
            table.add_row(q.question, f"({q.answer_letter}) {q.answer_text}", rs[0])
        console.print(table)
        console.print(f"reference teacher served {stats['requests']} requests, "
                      f"billed {stats['completion_tokens']} completion tokens")
    console.print(f"[yellow]not built yet:[/] {', '.join(NOT_YET_BUILT)}")
    console.print(f"demo finished in {time.time() - t0:.1f}s; run directory: {run.uri}")
