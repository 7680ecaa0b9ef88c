"""`kard run` and `kard demo`: the whole pipeline with one progress view and a final summary.

The demo is `kard run configs/demo.yaml`: the synthetic world, the reference teacher in its own
process on 127.0.0.1 (reached over HTTP by the real ``openai`` client from Ray Data actors),
offline models, an embedded Ray. Same code as a cluster run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table

from kard_ray.artifacts import RunDir
from kard_ray.config import KardConfig
from kard_ray.evaluation.report import results_table
from kard_ray.launch import open_run, start_ray
from kard_ray.pipeline import run_pipeline
from kard_ray.registry import LOGS_DIR, output, plan
from kard_ray.runtime import ray_log_dir, route_logs_to_file


def reranker_table(gap: dict) -> Table:
    """The trained reranker against question-only BM25 on held-out questions, with the candidate ceiling."""
    facts = gap["gold_facts"]
    ks = [k for k in next(iter(facts.values())) if k.startswith("recall@")]
    table = Table("retrieval with the question", *ks,
                  title=f"Reranker on {gap['questions']} {gap.get('question_kind', 'held-out')} test questions "
                        "(needed facts)")
    for method, vals in facts.items():
        if method != "candidate_ceiling":
            table.add_row(method, *[f"{vals[k]:.2f}" for k in ks])
    (ceiling_k, ceiling), = facts["candidate_ceiling"].items()
    table.caption = f"candidate ceiling ({gap['first_stage']}, {ceiling_k}): {ceiling:.2f}"
    return table


def _summary(manifest: dict) -> str:
    extra = manifest.get("extra", {})
    parts = [", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items())]
    for key, fmt in (("teacher_accuracy", "teacher accuracy {:.2f}"), ("final_loss", "loss {:.3f}"),
                     ("pairs_per_s", "{:.0f} pairs/s"), ("tokens_per_s", "{:.0f} tokens/s"),
                     ("padding_share", "padding {:.1%}")):
        if isinstance(extra.get(key), (int, float)):
            parts.append(fmt.format(extra[key]))
    return "; ".join(p for p in parts if p)


def run_pipeline_with_progress(cfg: KardConfig, address: str | None = None, force: bool = False,
                               console: Console | None = None, quiet_logs: bool = True) -> RunDir:
    """Every stage in order, one line per stage, then the results table and the report's path. With
    ``quiet_logs`` (the default) library and Ray logs go to ``RUN_DIR/logs/`` instead of the console."""
    console = console or Console()
    t0 = time.time()
    run = open_run(cfg, plan(cfg), address)  # the plan checked before anything is written or paid for
    log_file = _local_log_file(run, LOGS_DIR)
    with contextlib.ExitStack() as quiet:
        if quiet_logs:  # the console shows the stage view; everything else lands in RUN_DIR/logs
            route_logs_to_file(log_file)
            quiet.enter_context(_stderr_to(os.path.join(os.path.dirname(log_file), "stderr.log")))
        runtime = start_ray(cfg.ray, address, log_to_driver=not quiet_logs)
        if quiet_logs:
            _quiet_ray_data()
            _link_ray_logs(ray_log_dir(), os.path.dirname(log_file))
        console.print(f"[bold]Ray[/] {runtime.mode} at {runtime.address} ({runtime.cpus:.0f} logical CPUs); "
                      f"logs: {os.path.dirname(log_file)}", highlight=False, soft_wrap=True)
        manifests = _run_with_view(cfg, run, force, console, quiet_logs)
    return _finish(run, manifests, console, t0)


def _run_with_view(cfg: KardConfig, run: RunDir, force: bool, console: Console, quiet_logs: bool) -> dict:
    """The pipeline with a spinner naming the running stages (terminals) and one line per finished stage."""
    total = len(plan(cfg))
    done = [0]
    running: list[str] = []  # stages that do not need each other run at once
    status = console.status("starting")

    def on_stage(name: str, state: str, manifest: dict | None, seconds: float) -> None:
        if state == "start":
            running.append(name)
        else:
            running.remove(name)
            done[0] += 1
            mark = "[dim]skipped (up to date)[/]" if state == "skip" else f"[green]done[/] in {seconds:.0f}s"
            console.print(f"[{done[0]}/{total}] [bold]{name}[/] {mark}  {_summary(manifest or {})}", highlight=False,
                          soft_wrap=True)
        if running:
            status.update(f"[{done[0]}/{total} done] running {', '.join(running)} ...")

    with status:
        return run_pipeline(cfg, run, force=force, log=(lambda _m: None) if quiet_logs else console.print,
                            on_stage=on_stage)


def _finish(run: RunDir, manifests: dict, console: Console, t0: float) -> RunDir:
    """The reranker's and the evaluation's tables, the wall time and where the report is."""
    gap = manifests.get("reranker", {}).get("extra", {}).get("knowledge_gap")
    if gap and "gold_facts" in gap:
        console.print(reranker_table(gap))
    console.print(results_table(run.read_json(output("evaluate", "report_json"))))
    console.print(f"finished in {time.time() - t0:.0f}s; report: {run.uri_of(output('evaluate', 'report_md'))} "
                  f"(charts: accuracy.png, recall.png; `kard report {run.uri}` prints the table again)")
    return run


@contextlib.contextmanager
def _stderr_to(path: str):
    """File descriptor 2 into ``path`` while the pipeline runs: Ray's C++ warnings, worker crash notices and
    any library that prints to stderr stay off the console (and in the run's logs)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as target:
        os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _local_log_file(run: RunDir, logs_dir: str) -> str:
    """``RUN_DIR/logs/kard.log`` for a local run directory; a local temporary folder for a remote one."""
    folder = run.path(logs_dir) if run.is_local else tempfile.mkdtemp(prefix="kard-logs-")
    return os.path.join(folder, "kard.log")


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or per-operator progress logs on the console (the stage view replaces them)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    route_ray_data = logging.getLogger("ray.data")
    for h in [h for h in route_ray_data.handlers if type(h) is logging.StreamHandler]:
        route_ray_data.removeHandler(h)


def _link_ray_logs(session_logs: str | None, folder: str) -> None:
    """``logs/ray`` points at the Ray session's logs (every worker's stdout and stderr)."""
    link = os.path.join(folder, "ray")
    if session_logs and os.path.isdir(session_logs):
        if os.path.islink(link):
            os.remove(link)
        if not os.path.exists(link):
            os.symlink(session_logs, link)


def run_demo(cfg: KardConfig, address: str | None = None, force: bool = False, console: Console | None = None):
    """The README's main command: the whole pipeline on the synthetic world."""
    return run_pipeline_with_progress(cfg, address=address, force=force, console=console)
