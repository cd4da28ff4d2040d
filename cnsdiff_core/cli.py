"""The command line: `python -m cnsdiff_core <command>`. The only module that prints.

  train       train one or several samplers, write runs to the run store
  resume      continue an interrupted run from its last checkpoint
  runs, list  list stored runs
  import      register a user's file or folder under a name (data directory $CNSDIFF_DATA)
  datasets    list datasets and where they come from
  tune        an Optuna study of one sampler's settings on one storage (any number of workers)
  experiment  every sampler x seeds on one dataset, one results table (docs/RESULTS.md)
  fair-report the fair benchmark's table from its studies (scripts/fair_benchmark.sh)
  report      merge experiment CSVs into one table
  bench       seconds per epoch, evaluation time, memory, where the time goes
  precompute  the workshop bundle of runs and projections
"""
from __future__ import annotations

import argparse
import sys
import warnings

from .config import PRESETS, SAMPLERS, ConfigError, help_text, parse_set_args, preset_config
from .samplers import METHOD

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
MAX_CONFIG_BYTES = 1024**2  # a config is a few kB; anything this large is not one


class _Progress:
    """A tqdm bar on stderr over all batches of a run, plus one line per epoch above it."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.bar = prefix, None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from .events import BatchDone, EpochDone, Finished, Started

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

    from .runs import RunStore, train_and_store
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
        run_id, res = train_and_store(cfg, store, [progress], data=data)
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
    from .runs import RunStore, resume_run

    store = RunStore(args.runs_dir) if args.runs_dir else RunStore()
    run_id, res = resume_run(args.run_id, store, [_Progress("[resume]")])
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

    from .experiment import grid_table, open_grid, work_grid
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

    lines = (run_scale(sizes=[int(x) for x in args.scale.split(",")]) if args.scale else
             run_bench(datasets=args.datasets.split(","), epochs=args.epochs, device=args.device,
                       threads=args.threads))
    for line in lines:
        print(line, flush=True)
    return 0


def cmd_precompute(args) -> int:
    from .bundle import precompute_bundle

    for line in precompute_bundle(args.bundle, runs_dir=args.runs_dir, epochs=args.epochs,
                                  real_dataset=args.real_dataset, workers=args.workers, threads=args.threads):
        print(line, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cnsdiff_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train samplers and store the runs")
    t.add_argument("--dataset", default=None, help="registry name (sample, food, yelp2018, coat, kuairec, "
                   "synthetic:key=value,...) or a folder / file path")
    t.add_argument("--shift", default=None, help="popularity | temporal | exposure | random")
    t.add_argument("--sampler", default=METHOD, help=f"one or several of {','.join(SAMPLERS)}")
    t.add_argument("--preset", default="tuned", choices=sorted(PRESETS))
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any setting (repeatable)")
    t.add_argument("--config", help="a config JSON file (e.g. a run's config.json)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--runs-dir", help="run store folder (default $CNSDIFF_RUNS or runs/)")
    t.add_argument("--json", action="store_true", help="print one JSON summary line per run (last line)")
    t.add_argument("--help-settings", action="store_true", help="list every setting and exit")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue an interrupted run")
    r.add_argument("run_id")
    r.add_argument("--runs-dir")
    r.set_defaults(func=cmd_resume)

    for name in ("runs", "list"):
        ls = sub.add_parser(name, help="list stored runs")
        ls.add_argument("--runs-dir")
        ls.set_defaults(func=cmd_list)

    im = sub.add_parser("import", help="register a file or folder of interactions under a name")
    im.add_argument("path")
    im.add_argument("--name", required=True)
    im.add_argument("--force", action="store_true", help="replace an existing dataset of that name")
    im.set_defaults(func=cmd_import)

    ds = sub.add_parser("datasets", help="list datasets")
    ds.set_defaults(func=cmd_datasets)

    e = sub.add_parser("experiment", help="every sampler x seeds on one dataset")
    e.add_argument("--dataset", required=True)
    e.add_argument("--shift")
    e.add_argument("--samplers", default=",".join(SAMPLERS))
    e.add_argument("--seeds", type=int, default=1)
    e.add_argument("--epochs", type=int)
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--preset", default="tuned", help="preset of every sampler; further comma-separated presets "
                   f"add CNSDiff rows (e.g. tuned,paper); one or more of {', '.join(PRESETS)}")
    e.add_argument("--set", action="append", metavar="KEY=VALUE")
    e.add_argument("--variant", action="append", metavar="NAME:KEY=VALUE,...",
                   help="an extra CNSDiff row: the first preset with these overrides, labelled NAME (repeatable)")
    e.add_argument("--best-from", metavar="STORAGE", help="train each sampler with the best parameters of its "
                   "study BEST_PREFIX<sampler> in this storage (rows labelled optuna-best)")
    e.add_argument("--best-prefix", default="", help="study name prefix for --best-from (e.g. fair-food-)")
    e.add_argument("--no-reference", action="store_true", help="skip the reference-code row")
    e.add_argument("--no-mostpop", action="store_true", help="skip the MostPop row")
    e.add_argument("--storage", help="where the grid's study lives (as for tune; default: studies.db in the runs "
                   "folder): the same command on more processes or machines with this storage shares the grid")
    e.add_argument("--study", help="study name of the grid (default: derived from the dataset and every cell's settings)")
    e.add_argument("--workers", type=int, default=1, help="worker processes started here (one thread each)")
    e.add_argument("--runs-dir")
    e.add_argument("--out", help="write the table as CSV")
    e.set_defaults(func=cmd_experiment)

    tu = sub.add_parser("tune", help="tune one sampler's settings with Optuna (shared storage, any number of workers)",
                        description="An Optuna study maximizing IID-validation Recall@20. --trials is the study's "
                                    "total: start the same command on several processes or machines with one "
                                    "--storage and they share the study.")
    tu.add_argument("--dataset", required=True)
    tu.add_argument("--sampler", required=True, choices=list(SAMPLERS))
    tu.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials the study should hold")
    tu.add_argument("--storage", help="sqlite:///PATH, postgresql://user:pw@host/db, or a journal file "
                    "(journal:PATH or PATH.journal); default: studies.db in the runs folder")
    tu.add_argument("--study", help="study name (default: from dataset, shift, sampler, preset, epochs and seed)")
    tu.add_argument("--epochs", type=int, help="epoch budget of every trial (default: the preset's)")
    tu.add_argument("--timeout", type=float, help="this worker stops starting trials after this many seconds")
    tu.add_argument("--preset", default="tuned", choices=sorted(PRESETS), help="settings the search starts from")
    tu.add_argument("--shift")
    tu.add_argument("--seed", type=int, default=0, help="training seed of every trial and the TPE sampler's seed")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed override of every trial (repeatable)")
    tu.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tu.add_argument("--workers", type=int, default=1, help="worker processes started here (one thread each)")
    tu.add_argument("--warmup", type=int, help="epochs before pruning may stop a trial (default: epochs/5, at least 2)")
    tu.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a running trial's heartbeats")
    tu.add_argument("--grace-period", type=int, default=120,
                    help="a running trial silent this long belongs to a dead worker and is failed")
    tu.add_argument("--runs-dir")
    tu.add_argument("--json", action="store_true", help="print one JSON object with the study's result")
    tu.set_defaults(func=cmd_tune)

    fr = sub.add_parser("fair-report", help="the fair benchmark's table (CSV + markdown) from its journals")
    fr.add_argument("--datasets", required=True, help="comma-separated")
    fr.add_argument("--samplers", default=",".join(SAMPLERS))
    fr.add_argument("--studies", default="results/studies", help="folder of the <dataset>.journal files")
    fr.add_argument("--trials", type=int, default=24, help="the tuning budget (it names the seeds study)")
    fr.add_argument("--budget", action="append", metavar="DATASET=TRIALS", help="another budget for one dataset")
    fr.add_argument("--runs-dir", help="run store of the seed runs (default $CNSDIFF_RUNS); per-user metrics "
                    "are copied from it next to the studies")
    fr.add_argument("--per-user", help="folder of the compact per-user copies (default STUDIES/../fair/per_user)")
    fr.add_argument("--out", default="results/fair_benchmark.csv")
    fr.add_argument("--markdown", default="results/fair_benchmark.md")
    fr.set_defaults(func=cmd_fair_report)

    rp = sub.add_parser("report", help="merge experiment CSVs of one dataset into one table")
    rp.add_argument("csv", nargs="+")
    rp.add_argument("--refresh-fhn", action="store_true",
                    help="recompute the FHN columns from the runs' stored diagnostics (runs in --runs-dir or "
                         "$CNSDIFF_RUNS), e.g. for tables written before a column existed")
    rp.add_argument("--runs-dir", default=None)
    rp.add_argument("--out", default=None, help="also write the merged (and refreshed) rows as CSV")
    rp.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="speed benchmark")
    b.add_argument("--datasets", default="food,yelp2018")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--threads", type=int, default=None,
                   help="CPU training threads (the cpu_threads setting; 0 = torch's default); default: the setting's default, 1")
    b.add_argument("--scale", metavar="USERS,...", help="instead: synthetic worlds with 100k items and "
                   "50 interactions per user for these user counts (e.g. 5000,10000,20000), on CPU")
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("precompute", help="precompute the workshop bundle")
    w.add_argument("--bundle", default="workshop")
    w.add_argument("--runs-dir", help="where to write the bundle (default $CNSDIFF_RUNS or runs/)")
    w.add_argument("--epochs", type=int)
    w.add_argument("--real-dataset", help="also train on this dataset (e.g. coat)")
    w.add_argument("--workers", type=int, help="training processes at once (default: 1 with a GPU, else up to 2)")
    w.add_argument("--threads", type=int, help="torch threads per worker (default: its share of the CPUs)")
    w.set_defaults(func=cmd_precompute)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = None if argv is None else list(argv)[1:]  # the command's own arguments (worker processes reuse them)
    if getattr(args, "help_settings", False):
        print("\n".join(help_text()))
        return 0
    from .data.dataset import DataError
    from .runs import StoreError
    from .train import TrainingError
    from .tune import TuneError

    try:
        return args.func(args)
    except (ConfigError, DataError, StoreError, TrainingError, TuneError) as exc:
        _close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("interrupted: the run folder keeps its last checkpoint; `resume` continues it.", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """Clear a progress bar left open by an error, so the error message starts its own line."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is None:
        return
    for bar in list(getattr(tqdm_mod.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - cosmetic only; the error message matters
            pass


if __name__ == "__main__":
    sys.exit(main())
