"""The ``kard`` command. Each command is a thin shell over a library function."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from kard_ray.config import ConfigError, KardConfig, load_config, to_yaml

app = typer.Typer(
    help="kard-ray: Knowledge-Augmented Reasoning Distillation (KARD) on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
teacher_app = typer.Typer(help="Teacher LLM tools.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect configuration.", no_args_is_help=True)
data_app = typer.Typer()  # `kard data`: the stage, with `kard data check` beside it
kb_app = typer.Typer()  # `kard kb`: the stage, with `kard kb search` beside it
app.add_typer(kb_app, name="kb")
app.add_typer(teacher_app, name="teacher")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

console = Console()
REPO_ROOT = Path(__file__).resolve().parent.parent

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Dotted override, e.g. student.lr=1e-4 (repeatable).")
]
AddressOpt = Annotated[
    Optional[str], typer.Option("--address", help="Ray cluster to attach to (default: $RAY_ADDRESS, else embedded).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun stages even if their manifest matches.")]
RunDirOpt = Annotated[Optional[str], typer.Option("--run-dir", help="Override run_dir (path or URI).")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _serve_until_stopped() -> None:
    """Block a serving command until Ctrl-C or SIGTERM (``docker stop``, a pod's end, a supervisor), which both end
    in the caller's clean-up."""
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _load(config: Path | None, overrides: list[str] | None, run_dir: str | None = None) -> KardConfig:
    sets = list(overrides or [])
    if run_dir:
        sets.append(f"run_dir={run_dir}")
    try:
        return load_config(config, sets)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration (defaults <- YAML <- --set overrides)."""
    typer.echo(to_yaml(_load(config, set_)), nl=False)


# --------------------------------------------------------------------------- data


@data_app.callback(invoke_without_command=True)
def data_stage(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
               address: AddressOpt = None, force: ForceOpt = False) -> None:
    """Stage `data`: question sets (or a generated synthetic world) into normalised parquet (`kard data check`:
    read a file and report malformed records)."""
    if ctx.invoked_subcommand is None:
        _run_stages(config, set_, run_dir, address, force, ["data"])


@data_app.command("check")
def data_check(
    path: Annotated[str, typer.Argument(help="Question file (JSONL, JSON array or CSV) or KB source.")],
    fmt: Annotated[str, typer.Option("--format", help="auto|obqa|strategyqa|medqa|generic")] = "auto",
    kb: Annotated[bool, typer.Option("--kb", help="Read PATH as a knowledge base instead.")] = False,
    skip_malformed: Annotated[bool, typer.Option(help="Skip and count malformed records.")] = False,
) -> None:
    """Read a question set or KB, report counts and malformed records, show a sample."""
    from kard_ray.data import MalformedRecord, load_documents, load_questions

    mode = "skip" if skip_malformed else "error"
    try:
        if kb:
            docs, report = load_documents(path, fmt, mode)
            sample = [(d.id, d.title, d.text[:100]) for d in docs[:3]]
        else:
            qs, report = load_questions(path, fmt, mode)
            sample = [(q.id, q.question[:80], q.answer_text[:40]) for q in qs[:3]]
    except (MalformedRecord, FileNotFoundError, ValueError) as exc:
        _fail(str(exc), 1)
        return
    console.print(f"[bold]{path}[/]: format={report.format} rows={report.rows} skipped={report.skipped}")
    for ex in report.examples:
        console.print(f"  skipped: {ex}", highlight=False)
    table = Table(*(("id", "title", "text") if kb else ("id", "question", "answer")))
    for row in sample:
        table.add_row(*row)
    console.print(table)


# --------------------------------------------------------------------------- knowledge base


@kb_app.callback(invoke_without_command=True)
def kb_stage(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
             address: AddressOpt = None, force: ForceOpt = False) -> None:
    """Stage `kb`: knowledge-base documents chunked into passages on Ray Data (`kard kb search`: query a run's
    indexes; `kard index` builds them)."""
    if ctx.invoked_subcommand is None:
        _run_stages(config, set_, run_dir, address, force, ["kb"])


@kb_app.command("build", hidden=True)
def kb_build(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, address: AddressOpt = None,
             force: ForceOpt = False) -> None:
    """Stages `kb` and `index` (the earlier name of `kard index`)."""
    from kard_ray.registry import OLD_COMMANDS

    _run_stages(config, set_, run_dir, address, force, OLD_COMMANDS["kb build"])


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument(help="Query text.")],
    run_dir: Annotated[str, typer.Option("--run-dir", help="Run directory with kb/ and index/.")],
    k: Annotated[int, typer.Option("-k", help="How many passages.")] = 5,
    method: Annotated[str, typer.Option(help="bm25 | dense | hybrid")] = "bm25",
) -> None:
    """Search a run's knowledge base from the command line."""
    from kard_ray.artifacts import RunDir
    from kard_ray.run_readers import open_passages, open_retriever, run_config

    run = RunDir(run_dir)
    try:
        retriever = open_retriever(run.uri, run_config(run).retrieval, method)
    except FileNotFoundError as exc:
        _fail(str(exc), 1)
        return
    rows, scores = retriever.search_many([query], k)[0]
    store = open_passages(run.uri)
    table = Table("rank", "score", "pid", "passage", title=f"{method}: {query}")
    for i, (pid, text, score) in enumerate(zip(store.pids(rows), store.texts(rows), scores), start=1):
        table.add_row(str(i), f"{score:.3f}", pid, text[:120])
    console.print(table)


# --------------------------------------------------------------------------- teacher rationales


@app.command("rationales")
def rationales(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
    force: ForceOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print calls, tokens and cost; spend nothing.")] = False,
    import_path: Annotated[
        Optional[str], typer.Option("--import", help="Import rationales from a JSONL instead of calling a teacher.")
    ] = None,
    mode: Annotated[
        Optional[str], typer.Option("--mode", help="online | batch: chat completions as they go, or the provider's "
                                    "Batch API (about half price, resumable; sets teacher.mode).")
    ] = None,
) -> None:
    """Stage `rationales`: n chain-of-thought rationales per question from the teacher (cached, rate-limited)."""
    from kard_ray.artifacts import RunDir
    from kard_ray.pipeline import run_stages
    from kard_ray.stages import rationales as rationales_stage

    sets = list(set_ or []) + ([f"teacher.import_path={import_path}"] if import_path else []) + (
        [f"teacher.mode={mode}"] if mode else [])
    cfg = _load(config, sets, run_dir)
    run = RunDir(cfg.run_dir)
    try:
        if dry_run:
            run_stages(cfg, run, ["data"])
            plan = rationales_stage.plan(cfg, run)
            paid = {"online": " (teacher.mode)" if plan["mode"] == "online" else "",
                    "batch": " (teacher.mode)" if plan["mode"] == "batch" else ""}
            table = Table("questions", "samples", "already cached", "calls to make", "in recorded batches",
                          "est. prompt tokens", "est. completion tokens", f"est. cost online (USD){paid['online']}",
                          f"est. cost batch (USD){paid['batch']}", title=f"Dry run: teacher {cfg.teacher.model}")
            table.add_row(*(str(plan[k]) for k in ("questions", "samples", "cached_samples", "calls",
                                                   "in_recorded_batches", "est_prompt_tokens",
                                                   "est_completion_tokens", "est_cost_usd", "est_cost_batch_usd")))
            console.print(table)
            return
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 1)
    _run_stages(config, sets, run_dir, address, force, ["rationales"])


# --------------------------------------------------------------------------- augment and reranker


def _run_stages(config, set_, run_dir, address, force, names: list[str]) -> None:
    """Load config, start/attach Ray, run the named stages and, first, whatever they need (never forced)."""
    from kard_ray.launch import run_targets
    from kard_ray.preflight import PlanRefused
    from kard_ray.teacher.worker import TeacherAborted

    cfg = _load(config, set_, run_dir)
    try:
        run_targets(cfg, names, address, force=force)
    except PlanRefused as exc:  # every reason, before anything ran or was written
        _fail(str(exc))
    except TeacherAborted as exc:  # the failure budget ran out: a distinct exit code for scripts
        _fail(str(exc), 3)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc), 1)


def _check_plan(cfg: KardConfig, targets: list[str], address: str | None) -> list[str]:
    """The stages ``targets`` need, or exit 2 with every reason the plan cannot finish (nothing run or written)."""
    from kard_ray.preflight import PlanRefused, check_plan
    from kard_ray.runtime import cluster_nodes

    try:
        return check_plan(cfg, targets, cluster_nodes(cfg.ray, address))
    except PlanRefused as exc:
        _fail(str(exc))
        raise  # unreachable


def _stage_command(names: list[str]):
    """A `kard` command that runs ``names`` (from the registry); its help is their summaries."""
    from kard_ray.registry import stage

    def command(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
                address: AddressOpt = None, force: ForceOpt = False) -> None:
        _run_stages(config, set_, run_dir, address, force, names)
        if "evaluate" in names:
            _print_report(_load(config, set_, run_dir).run_dir)

    command.__doc__ = " ".join(f"Stage `{n}`: {stage(n).summary}" for n in names)
    return command


def _register_stage_commands() -> None:
    """`kard <stage>` for every stage (a stage's command is its name), and the earlier names, hidden."""
    from kard_ray.registry import OLD_COMMANDS, STAGES

    custom = {"data", "kb", "rationales"}  # a group with subcommands, or options of their own
    for name in STAGES:
        if name not in custom:
            app.command(name)(_stage_command([name]))
    for old, stages in OLD_COMMANDS.items():
        if " " not in old:
            app.command(old, hidden=True)(_stage_command(stages))


_register_stage_commands()


@app.command("train-student", hidden=True)
def train_student(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
                  address: AddressOpt = None, force: ForceOpt = False,
                  method: Annotated[Optional[list[str]], typer.Option(
                      "--method", "-m", help="kard, rd or ft (repeatable; default: student.method).")] = None) -> None:
    """Stages `student_<method>` (`kard student_kard`, ...): several students by --method."""
    from kard_ray.registry import STUDENT_METHODS, student_stage

    bad = [m for m in method or [] if m not in STUDENT_METHODS]
    if bad:
        _fail(f"unknown method(s) {', '.join(bad)}; choose {', '.join(STUDENT_METHODS)}")
    methods = method or [_load(config, set_, run_dir).student.method]
    _run_stages(config, set_, run_dir, address, force, [student_stage(m) for m in methods])


def _print_report(run_dir: str) -> None:
    from kard_ray.artifacts import RunDir
    from kard_ray.efficiency import floor_table
    from kard_ray.evaluation.report import compute_floor_table, results_table
    from kard_ray.registry import STAGES, output

    run = RunDir(run_dir)
    if not run.exists(output("evaluate", "report_json")):
        _fail(f"no evaluation report in {run.uri} (run `kard evaluate` or `kard run` first)", 1)
    console.print(results_table(run.read_json(output("evaluate", "report_json"))))
    floor = floor_table([m for m in map(run.manifest, STAGES) if m is not None])
    if floor["wall_over_floor"] is not None:
        console.print(compute_floor_table(floor))
    console.print(f"report: {run.uri_of(output('evaluate', 'report_md'))}")


@app.command("report")
def report(run_dir: Annotated[str, typer.Argument(help="A run directory (path or URI).")]) -> None:
    """Print a finished run's results table again."""
    _print_report(run_dir)


@app.command("run")
def run_all(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None, address: AddressOpt = None,
            force: ForceOpt = False,
            check: Annotated[bool, typer.Option("--check", help="Only check the plan (splits, inputs, the teacher's "
                                                "key, run dir vs cluster, models); run and write nothing.")] = False
            ) -> None:
    """The whole pipeline: kb -> rationales -> augment -> reranker -> students -> evaluate (finished stages skip)."""
    from kard_ray.demo import run_pipeline_with_progress
    from kard_ray.preflight import PlanRefused
    from kard_ray.registry import plan

    cfg = _load(config, set_, run_dir)
    if check:
        stages = _check_plan(cfg, plan(cfg), address)
        console.print(f"plan OK: {' -> '.join(stages)} (run dir {cfg.run_dir})", highlight=False, soft_wrap=True)
        return
    try:
        run_pipeline_with_progress(cfg, address=address, force=force, console=console)
    except PlanRefused as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc), 1)


@app.command("serve")
def serve_run(
    run_dir: Annotated[str, typer.Argument(help="A finished run directory (path or URI).")],
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    student: Annotated[str, typer.Option(help="Which trained student answers: kard, rd or ft.")] = "kard",
    api_key_env: Annotated[Optional[str], typer.Option(
        help="Require a bearer key read from this environment variable.")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Dynamic batch size of reranker and generator (1 = off).")] = 16,
    max_replicas: Annotated[int, typer.Option(help="Autoscaling ceiling of reranker and generator replicas.")] = 1,
    num_gpus: Annotated[Optional[float], typer.Option(
        help="GPUs per reranker and generator replica, fractions allowed (default: the run's reranker.num_gpus for "
             "the reranker, none for the generator).")] = None,
    model_threads: Annotated[Optional[int], typer.Option(
        help="Torch threads of each reranker and generator replica (default: the machine's cores on an embedded "
             "Ray, where a request's models run one after the other; on a cluster, the CPUs each reserves).")] = None,
    hops: Annotated[Optional[int], typer.Option(
        help="Retrieve-and-rerank rounds (default: the run's; same as --override hops=N).")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(
        help="Embedded Ray: Prometheus metrics at http://127.0.0.1:PORT/metrics.")] = None,
    override: Annotated[Optional[list[str]], typer.Option(
        "--override", help="Replace one of the run's inference settings, e.g. max_new_tokens=96 (repeatable; "
                           "GET /healthz lists them).")] = None,
    direct_ingress: Annotated[bool, typer.Option(
        help="Embedded Ray: the ingress replica serves --port itself, no Serve proxy in front (Ray's experimental "
             "direct ingress; refuses a burst several times faster on a small machine, docs/reliability.md). On a "
             "cluster, start its nodes with RAY_SERVE_ENABLE_DIRECT_INGRESS=1 instead.")] = False,
    address: AddressOpt = None,
) -> None:
    """Serve a run as it was evaluated: POST /v1/answer, POST /v1/chat/completions, GET /healthz, /docs."""
    from ray import serve

    from kard_ray.config import RayConfig, parse_override
    from kard_ray.runtime import init_ray, resolve_address, serve_model_threads
    from serve.app import Autoscaling, ServeAppArgs, build_app
    from serve.direct_ingress import enable_direct_ingress, serving_urls

    scaling = Autoscaling(min_replicas=1, max_replicas=max_replicas)
    ray_cfg = RayConfig(metrics_export_port=metrics_port)
    if direct_ingress and resolve_address(ray_cfg, address):
        _fail("--direct-ingress starts an embedded Ray that way; on a cluster, start every node with "
              "RAY_SERVE_ENABLE_DIRECT_INGRESS=1 in its environment (docs/cluster.md, Serving)")
    try:
        overrides = {".".join(k): v for k, v in map(parse_override, override or [])}
        if hops is not None:
            overrides["hops"] = hops
        if model_threads is None:
            model_threads = serve_model_threads(ray_cfg, address)
        args = ServeAppArgs(run_dir=run_dir, student=student, api_key_env=api_key_env, max_batch_size=max_batch_size,
                            overrides=overrides, reranker_autoscaling=scaling, generator_autoscaling=scaling,
                            model_threads=model_threads, reranker_num_gpus=num_gpus,
                            generator_num_gpus=num_gpus or 0.0)
        app_ = build_app(args)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    proxy = enable_direct_ingress(port) if direct_ingress else port
    init_ray(ray_cfg, address)
    serve.start(http_options={"host": host, "port": proxy})
    serve.run(app_, name="kard", route_prefix="/")
    for url in serving_urls("kard", host) or [f"http://{host}:{port}"]:
        console.print(f"serving {run_dir} at {url}  (docs: {url}/docs; Ctrl-C stops)")
    try:
        _serve_until_stopped()
    finally:
        serve.shutdown()


# --------------------------------------------------------------------------- synthetic world


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the world into.")],
    seed: Annotated[int, typer.Option(help="Random seed; the world is a function of it.")] = 0,
    train_people: int = 200,
    dev_people: int = 40,
    test_people: int = 60,
    towns: int = 60,
    regions: int = 12,
    distractors: Annotated[int, typer.Option(help="Distractor paragraphs per person.")] = 4,
    two_hop_share: Annotated[float, typer.Option(help="Share of questions that need two facts.")] = 0.5,
) -> None:
    """Write a synthetic knowledge world: kb.jsonl, train/dev/test.jsonl and world.json."""
    from pydantic import ValidationError

    from kard_ray.config import SynthConfig
    from kard_ray.synth import generate_world, write_world

    try:
        cfg = SynthConfig(seed=seed, train_people=train_people, dev_people=dev_people, test_people=test_people,
                          towns=towns, regions=regions, distractors_per_person=distractors,
                          two_hop_share=two_hop_share)
    except ValidationError as exc:
        _fail(str(exc))
        return
    world = generate_world(cfg)
    write_world(world, out)
    sizes = ", ".join(f"{s} {len(q)}" for s, q in world.questions.items())
    console.print(f"wrote {out}: {len(world.documents)} KB documents; questions: {sizes}")


# --------------------------------------------------------------------------- teacher


@teacher_app.command("reference-serve")
def reference_serve(
    world: Annotated[Path, typer.Option("--world", help="World folder written by `kard synth`.")],
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8001,
    host: Annotated[str, typer.Option(help="Bind address; keep loopback unless you mean it.")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Added latency per request.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform random extra latency.")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="Share of requests that fail.")] = 0.0,
    faults: Annotated[str, typer.Option(help="Comma list of fault kinds: 429,500,timeout,malformed.")] = (
        "429,500,timeout,malformed"),
    retry_after_s: Annotated[float, typer.Option(help="Retry-After sent with injected 429s.")] = 1.0,
    stall_s: Annotated[float, typer.Option(help="How long a 'timeout' fault stalls before a 504.")] = 30.0,
    wrong_rate: Annotated[float, typer.Option(help="Share of rationales with a wrong answer.")] = 0.0,
    seed: int = 0,
    api_key_env: Annotated[
        Optional[str], typer.Option(help="Require the bearer key held in this environment variable.")
    ] = None,
    batch_delay_s: Annotated[float, typer.Option(help="Batch API: a batch completes this long after creation.")] = 1.0,
    batch_fail_rate: Annotated[float, typer.Option(help="Batch API: share of requests failing inside a batch.")] = 0.0,
    batch_expire: Annotated[int, typer.Option(help="Batch API: the first N batches created expire.")] = 0,
    batch_max_requests: Annotated[int, typer.Option(help="Batch API: requests allowed per batch.")] = 50_000,
    batch_max_bytes: Annotated[int, typer.Option(help="Batch API: bytes allowed per input file.")] = 200_000_000,
) -> None:
    """Serve the synthetic world's reference teacher (OpenAI-compatible) until interrupted."""
    from kard_ray.teacher.reference_server import ReferenceTeacherServer, ServerOptions

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            _fail(f"environment variable {api_key_env} is not set")
    try:
        options = ServerOptions(latency_ms=latency_ms, jitter_ms=jitter_ms, fault_rate=fault_rate,
                                faults=tuple(f.strip() for f in faults.split(",") if f.strip()),
                                retry_after_s=retry_after_s, stall_s=stall_s, wrong_rate=wrong_rate,
                                seed=seed, api_key=api_key, batch_delay_s=batch_delay_s,
                                batch_fail_rate=batch_fail_rate, batch_expire=batch_expire,
                                batch_max_requests=batch_max_requests, batch_max_bytes=batch_max_bytes)
        server = ReferenceTeacherServer(world, options, host=host, port=port)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    server.start()
    console.print(f"reference teacher (synthetic world {world}) at {server.base_url}  -- Ctrl-C to stop")
    try:
        _serve_until_stopped()
    finally:
        server.stop()
        console.print(json.dumps(server.stats()))


@teacher_app.command("serve")
def teacher_serve(
    model: Annotated[str, typer.Option(help="HF model id, local folder, or smollm2-135m-instruct (offline).")] = (
        "smollm2-135m-instruct"),
    port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1.")] = 8002,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    replicas: Annotated[int, typer.Option(help="Serve replicas of the model.")] = 1,
    num_gpus: Annotated[float, typer.Option(help="GPUs per replica.")] = 0.0,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub (off by default).")] = False,
    address: AddressOpt = None,
) -> None:
    """Serve a self-hosted teacher (OpenAI-compatible /v1/chat/completions) on Ray Serve until interrupted."""
    from ray import serve as ray_serve

    from kard_ray.runtime import init_ray
    from serve.teacher import TeacherAppArgs, build_app

    init_ray(None, address)
    ray_serve.start(http_options={"host": host, "port": port})
    ray_serve.run(build_app(TeacherAppArgs(model=model, replicas=replicas, num_gpus=num_gpus,
                                           trust_remote_code=trust_remote_code)),
                  name="kard-teacher", route_prefix="/")
    console.print(f"self-hosted teacher {model} at http://{host}:{port}/v1  -- Ctrl-C to stop")
    try:
        _serve_until_stopped()
    finally:
        ray_serve.shutdown()


# --------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    address: AddressOpt = None,
    force: ForceOpt = False,
) -> None:
    """The embedded demo: `kard run configs/demo.yaml`, synthetic world, offline models, local Ray."""
    from kard_ray.demo import run_demo

    cfg = _load(config or REPO_ROOT / "configs" / "demo.yaml", set_, run_dir)
    from kard_ray.preflight import PlanRefused

    try:
        run_demo(cfg, address=address, force=force, console=console)
    except PlanRefused as exc:
        _fail(str(exc))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc), 1)


def main() -> None:  # pragma: no cover - console-script shim
    app(prog_name="kard")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
