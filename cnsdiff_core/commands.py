"""The commands of the command line (`cli` parses the arguments and calls one of them); with `cli`
the only module that prints. Each returns the process's exit status."""
from __future__ import annotations

import sys

from .config import PRESETS, ConfigError, parse_set_args, preset_config

MAX_CONFIG_BYTES = 1024**2  # a config is a few kB; anything this large is not one

class _Progress:
    """A tqdm bar on stderr over all batches of a run, plus one line per epoch above it."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.bar = prefix, None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from .events import BatchDone, EpochDone, Finished, MapsProgress, Started

        if isinstance(event, Started):
            tqdm.write(f"{self.prefix} device: {event.device}, {event.n_train} training interactions",
                       file=sys.stderr)
        elif isinstance(event, BatchDone):
            total = event.n_batches * self._epochs
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.prefix, unit="batch", file=sys.stderr,
                                dynamic_ncols=True, leave=False)
            done = event.epoch * event.n_batches + event.batch
            self.bar.update(max(done - self.bar.n, 0))
            self.bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}")
        elif isinstance(event, EpochDone):
            r = event.record
            tqdm.write(f"{self.prefix} epoch {r['epoch']}: loss {r.get('loss', float('nan')):.4f} "
                       f"valid R@20 {r.get('valid_recall@20', float('nan')):.4f} "
                       f"OOD R@20 {r.get('ood_recall@20', float('nan')):.4f} ({r['train_seconds']:.2f}s)",
                       file=sys.stderr)
        elif isinstance(event, Finished) and self.bar is not None:
            self.bar.close()
        elif isinstance(event, MapsProgress):
            tqdm.write(f"{self.prefix} maps: {event.note}", file=sys.stderr)

    _epochs = 1

    def for_epochs(self, epochs: int) -> "_Progress":
        self._epochs = epochs
        return self

def run_summary(run_id: str, cfg, res, device: str) -> dict:
    """The `--json` line: what a script needs from a finished run (fhn: `diagnostics.fhn_summary`
    at the selected epoch)."""
    from .diagnostics import fhn_summary

    metrics = {split: {f"{m}@{k}": res.metrics.get(f"{split}_{m}@{k}") for m in ("recall", "ndcg", "precision", "hit")
                       for k in (10, 20)} for split in ("iid", "ood")}
    fhn = fhn_summary(res.diagnostics, cfg.sampler, res.best_epoch)
    train_s = [r.get("train_seconds", 0.0) for r in res.history]
    return {"run_id": run_id, "dataset": cfg.dataset, "shift": cfg.shift, "sampler": cfg.sampler,
            "preset": cfg.preset, "device": device, "status": res.status, "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch, "seconds_per_epoch": sum(train_s) / max(len(train_s), 1),
            "seconds": res.seconds, "metrics": metrics, "fhn": fhn}

def _config_from_args(args, sampler: str):
    overrides = parse_set_args(args.set or [])
    for name in ("dataset", "shift", "device", "epochs", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "config", None):
        from pathlib import Path

        from .config import TrainConfig

        path = Path(args.config)
        try:
            if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"config file {args.config} is larger than {MAX_CONFIG_BYTES // 1024**2} MB; "
                                  "pass a run's config.json.")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {args.config} ({exc.strerror}); check the path.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {args.config} is not UTF-8 text; pass a run's config.json.") from None
        try:
            base = TrainConfig.from_json(text).to_dict()
        except ConfigError:
            raise
        except (ValueError, RecursionError) as exc:  # nesting or numbers beyond what json reads
            raise ConfigError(f"config file {args.config} is not a usable config ({type(exc).__name__}); "
                              "pass a run's config.json.") from None
        base.update(overrides)
        overrides = base
    overrides["sampler"] = sampler
    return preset_config(args.preset, **overrides)

def cmd_train(args) -> int:
    import dataclasses
    import json

    from .runs import RunStore
    from .recorder import train_and_store
    from .train import device_label, resolve_device

    store = RunStore(args.runs_dir) if args.runs_dir else RunStore()
    samplers = [s.strip() for s in args.sampler.split(",") if s.strip()]
    configs = [_config_from_args(args, s) for s in samplers]  # validate all before training any
    from .data import load_dataset

    data = load_dataset(configs[0].dataset, configs[0].shift, seed=configs[0].data_seed)
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    device = device_label(resolve_device(configs[0].device), configs[0].cpu_threads)
    for cfg in configs:
        cfg = dataclasses.replace(cfg, shift=data.shift)
        progress = _Progress(f"[{cfg.sampler}]").for_epochs(cfg.epochs)
        run_id, res = train_and_store(cfg, store, [progress], data=data, maps=args.maps)
        m = res.metrics
        if args.json:
            print(json.dumps(run_summary(run_id, cfg, res, device)), flush=True)
            continue
        print(f"run {run_id}: {res.status} ({res.message}); selected epoch {res.best_epoch}; "
              f"IID R@20 {m.get('iid_recall@20', float('nan')):.4f} NDCG@20 {m.get('iid_ndcg@20', float('nan')):.4f}; "
              f"OOD R@20 {m.get('ood_recall@20', float('nan')):.4f} NDCG@20 {m.get('ood_ndcg@20', float('nan')):.4f}; "
              f"{res.seconds:.1f}s")
    return 0

def cmd_import(args) -> int:
    from .data.imports import import_dataset

    info = import_dataset(args.path, args.name, force=args.force)
    print(f"imported {info['name']} into {info['path']}: {info['users']} users, {info['items']} items; "
          f"train {info['train']}, valid {info['valid']}, IID test {info['test_iid']}, OOD test {info['test_ood']} "
          f"({info['shift']} shift)")
    for note in info["notes"]:
        print(f"note: {note}")
    print(f"use it with --dataset {info['name']}")
    return 0

def cmd_resume(args) -> int:
    from .runs import RunStore
    from .recorder import resume_run

    store = RunStore(args.runs_dir) if args.runs_dir else RunStore()
    run_id, res = resume_run(args.run_id, store, [_Progress("[resume]")], maps=args.maps)
    print(f"run {run_id}: {res.status}; selected epoch {res.best_epoch}")
    return 0

def cmd_list(args) -> int:
    from .runs import RunStore

    store = RunStore(args.runs_dir) if args.runs_dir else RunStore()
    runs = store.list_runs()
    if not runs:
        print(f"no runs in {store.root}")
    for r in runs:
        ood = r.final.get("ood_recall@20")
        extra = f" OOD R@20 {ood:.4f}" if isinstance(ood, (int, float)) else ""
        print(f"{r.run_id}\t{r.status}\t{r.message}{extra}")
    return 0

def cmd_datasets(args) -> int:
    from .data import DataError, list_datasets, load_dataset

    print("name\tkind\tusers\titems\tinteractions (train/valid/IID/OOD)\tshifts\tsource")
    for d in list_datasets():
        counts = "-\t-\t-"
        if d.get("available") and d["name"] != "synthetic":
            try:
                ds = load_dataset(d["name"])
                counts = (f"{ds.n_users}\t{ds.n_items}\t{len(ds.train)}/{len(ds.valid)}/"
                          f"{len(ds.test_iid)}/{len(ds.test_ood)}")
            except DataError as exc:
                counts = f"-\t-\tunreadable: {exc}"
        where = d.get("path", d.get("description", "")) if d.get("available") else f"unavailable: {d.get('reason', '')}"
        print(f"{d['name']}\t{d.get('kind', '')}\t{counts}\t{', '.join(d.get('shifts', []))}\t{where}")
    return 0

def _variants(items: list[str]) -> dict[str, dict]:
    """--variant NAME:key=value,key=value -> {NAME: {key: value}}."""
    out = {}
    for item in items:
        name, _, sets = item.partition(":")
        if not name.strip() or not sets.strip():
            raise ConfigError(f"--variant {item!r} is not NAME:key=value[,key=value]; e.g. tuned+kl:causal=kl.")
        out[name.strip()] = parse_set_args([p for p in sets.split(",") if p.strip()])
    return out

def _best_overrides(storage: str, prefix: str, samplers: list[str], runs_dir) -> dict[str, dict]:
    """Each sampler's best configuration in the studies PREFIX<sampler> of a storage."""
    from .tune import best_overrides

    return {s: best_overrides(storage, f"{prefix}{s}", s, runs_dir) for s in samplers if s != "mostpop"}

def cmd_experiment(args) -> int:
    import optuna

    from .grid import grid_table, open_grid, work_grid
    from .tune import spawn_workers, wait_workers

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    presets = [p.strip() for p in args.preset.split(",") if p.strip()]
    for p in presets:
        if p not in PRESETS:
            raise ConfigError(f"preset {p!r} is unknown; use one or several (comma-separated) of {', '.join(PRESETS)}.")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers} is invalid: give 1 or more worker processes.")
    overrides = parse_set_args(args.set or [])
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    best, label = None, None
    if args.best_from:
        best, label = _best_overrides(args.best_from, args.best_prefix or "", samplers, args.runs_dir), "optuna-best"
    grid = open_grid(args.dataset, samplers, seeds=args.seeds, shift=args.shift, device=args.device, preset=presets,
                     overrides=overrides, with_reference=not args.no_reference, runs_dir=args.runs_dir,
                     storage=args.storage, study=args.study, variants=_variants(args.variant or []),
                     sampler_overrides=best, label=label)
    procs = []
    if args.workers > 1 and grid.study is not None:
        argv = _worker_args(sys.argv[2:] if args._argv is None else args._argv, (), ("--workers", "--out"))
        procs = spawn_workers(["experiment", *argv, "--study", grid.study.study_name], args.workers - 1)
    work_grid(grid, args.runs_dir, log=lambda line: print(line, flush=True))
    codes = wait_workers(procs)
    with_mostpop = not args.no_mostpop or "mostpop" in samplers
    table = grid_table(grid, with_mostpop, log=lambda line: print(f"note: {line}", file=sys.stderr))
    print(table.markdown)
    if args.out:
        table.frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    if any(codes):
        print(f"error: {sum(1 for c in codes if c)} worker process(es) exited with an error (codes {codes}); "
              "their messages are above.", file=sys.stderr)
        return 2
    return 0

def _worker_args(argv: list[str], drop_flags: tuple[str, ...], drop_valued: tuple[str, ...]) -> list[str]:
    """The command line of a worker process: the parent's own arguments without the ones that are
    the parent's alone (--workers N, --json, --out FILE)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in drop_flags or any(a.startswith(f + "=") for f in drop_valued):
            continue
        if a in drop_valued:
            skip = True
            continue
        out.append(a)
    return out + ["--workers", "1"]

def cmd_tune(args) -> int:
    import json

    import optuna

    from .tune import open_study, spawn_workers, wait_workers, work

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in one sentence below
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers} is invalid: give 1 or more worker processes.")
    overrides = parse_set_args(args.set or [])
    opened = open_study(args.dataset, args.sampler, args.trials, storage=args.storage, study=args.study,
                        epochs=args.epochs, preset=args.preset, shift=args.shift, seed=args.seed,
                        device=args.device, overrides=overrides, runs_dir=args.runs_dir,
                        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                        warmup=args.warmup)
    tag = f"[{opened.study.study_name}]"
    log = lambda line: print(f"{tag} {line}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"storage {opened.label}; {args.trials} finished trials wanted; {args.workers} worker(s) here")
    procs = []
    if args.workers > 1:  # the same command in more processes: they share the study through its storage
        argv = _worker_args(sys.argv[2:] if args._argv is None else args._argv, ("--json",), ("--workers",))
        procs = spawn_workers(["tune", *argv, "--study", opened.study.study_name], args.workers - 1)
    summary = work(opened, timeout=args.timeout, runs_dir=args.runs_dir, log=log)
    codes = wait_workers(procs)
    if procs:
        from .tune import study_summary

        summary = study_summary(opened.study, opened.label, {k: summary[k] for k in ("trials", "stopped", "gave_up")})
        summary["worker_exit_codes"] = codes
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        best = summary["best_value"]
        print(f"study {summary['study']} ({summary['storage']}): {summary['n_complete']} complete, "
              f"{summary['n_pruned']} pruned, {summary['n_failed']} failed; "
              + (f"best validation Recall@20 {best:.4f} (trial {summary['best_trial']}, run {summary['best_run_id']}) "
                 f"with {json.dumps(summary['best_params'])}" if best is not None else "no complete trial yet"))
    for f in summary["failures"]:
        if f["error"] and f["error"] != "stopped by request":
            print(f"note: trial {f['trial']} failed: {f['error']}", file=sys.stderr)
    if summary["gave_up"]:
        print(f"error: {summary['gave_up']}", file=sys.stderr)
        return 2
    if any(codes):
        print(f"error: {sum(1 for c in codes if c)} worker process(es) exited with an error (codes {codes}); "
              "their messages are above.", file=sys.stderr)
        return 2
    return 0

def cmd_fair_report(args) -> int:
    import os

    import optuna

    from .fair import fair_report

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    budgets = {d: args.trials for d in args.datasets.split(",") if d}
    for item in args.budget or []:
        ds, _, n = item.partition("=")
        try:
            budgets[ds.strip()] = int(n)
        except ValueError:
            raise ConfigError(f"--budget {item!r} is not DATASET=TRIALS; e.g. yelp2018=8.") from None
    runs = args.runs_dir or os.environ.get("CNSDIFF_RUNS")
    frame = fair_report(list(budgets), args.studies, [s for s in args.samplers.split(",") if s], budgets,
                        args.out, args.markdown, runs_dir=runs, per_user_dir=args.per_user)
    print(open(args.markdown).read())
    print(f"wrote {args.out} and {args.markdown} ({len(frame)} rows)")
    return 0

def cmd_fair_pairs(args) -> int:
    from .fair import fair_pairs, pairs_markdown

    try:
        pairs = fair_pairs(args.dataset, args.sampler, args.table, args.per_user,
                           tuple(m for m in args.metrics.split(",") if m))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{args.sampler} on {args.dataset} against every other sampler (per-user means over the seeds):\n")
    print(pairs_markdown(pairs))
    return 0

def cmd_report(args) -> int:
    from pathlib import Path

    from .experiment import table_from_csvs
    from .runs import RunStore

    store = None
    if args.refresh_fhn:
        store = RunStore(args.runs_dir) if args.runs_dir else RunStore()
    table = table_from_csvs(args.csv, refresh_store=store)
    if args.out:
        if Path(args.out).resolve() in {Path(p).resolve() for p in args.csv}:
            raise SystemExit(f"--out {args.out} is one of the input CSVs; write the merged table to a new file.")
        table.frame.to_csv(args.out, index=False)
    print(table.markdown)
    return 0

def cmd_bench(args) -> int:
    from .bench import run_bench, run_scale

    from .samplers import sampler_class

    samplers = None
    if args.samplers:
        samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
        for s in samplers:
            sampler_class(s)  # an unknown name is one sentence before anything loads
    lines = (run_scale(sizes=[int(x) for x in args.scale.split(",")]) if args.scale else
             run_bench(datasets=args.datasets.split(","), epochs=args.epochs, device=args.device,
                       threads=args.threads, repeats=args.repeats, cuda_graph=args.cuda_graph,
                       samplers=samplers))
    for line in lines:
        print(line, flush=True)
    return 0

def cmd_precompute(args) -> int:
    from .bundle import precompute_bundle

    for line in precompute_bundle(args.bundle, runs_dir=args.runs_dir, epochs=args.epochs,
                                  real_dataset=args.real_dataset, workers=args.workers, threads=args.threads):
        print(line, flush=True)
    return 0
