"""The command line: `python -m cnsdiff_core <command>`: its parser and entry point; the commands
are in `commands`. These two are the only modules that print.

  train       train one or several samplers, write runs to the run store
  resume      continue an interrupted run from its last checkpoint
  runs, list  list stored runs
  import      register a user's file or folder under a name (data directory $CNSDIFF_DATA)
  datasets    list datasets and where they come from
  tune        an Optuna study of one sampler's settings on one storage (any number of workers)
  experiment  every sampler x seeds on one dataset, one results table (docs/RESULTS.md)
  fair-report the fair benchmark's table from its studies (scripts/fair_benchmark.sh)
  fair-pairs  one sampler of that table against every other, paired over users
  report      merge experiment CSVs into one table
  bench       seconds per epoch, evaluation time, memory, where the time goes
  precompute  the workshop bundle of runs and projections
"""
from __future__ import annotations

import argparse
import sys
import warnings

from .commands import (cmd_train, cmd_import, cmd_resume, cmd_list, cmd_datasets,
                       cmd_experiment, cmd_tune, cmd_fair_report, cmd_fair_pairs, cmd_report, cmd_bench, cmd_precompute)
from .config import PRESETS, SAMPLERS, ConfigError, help_text
from .samplers import METHOD

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")


def _maps_arg(text: str) -> tuple[str, ...]:
    """--maps: 'pca,umap', 'pca', 'umap' or 'none'."""
    from .stored_maps import parse_maps

    try:
        return parse_maps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    t.add_argument("--maps", default="pca,umap", type=_maps_arg, metavar="pca,umap|none",
                   help="2-D item maps computed and stored with each run once it has trained, so the explore "
                        "pages never fit one (default pca,umap; none skips them)")
    t.add_argument("--help-settings", action="store_true", help="list every setting and exit")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue an interrupted run")
    r.add_argument("run_id")
    r.add_argument("--runs-dir")
    r.add_argument("--maps", default="pca,umap", type=_maps_arg, metavar="pca,umap|none",
                   help="item maps stored with the run once it has trained (as for train)")
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
                   help="an extra CNSDiff row: the first preset (with --best-from: CNSDiff's best configuration) with "
                   "these overrides, labelled NAME (repeatable)")
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
    fp = sub.add_parser("fair-pairs", help="one sampler of the fair benchmark against every other, paired over users")
    fp.add_argument("--dataset", required=True)
    fp.add_argument("--sampler", default=METHOD)
    fp.add_argument("--table", default="results/fair_benchmark.csv", help="the benchmark table (its run ids)")
    fp.add_argument("--per-user", help="folder of the per-user copies (default TABLE's folder/fair/per_user)")
    fp.add_argument("--metrics", default="ood_recall@20,iid_recall@20", help="comma-separated per-user metrics")
    fp.set_defaults(func=cmd_fair_pairs)

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
    b.add_argument("--samplers", default=None, help="samplers to time, comma-separated (default: the uniform "
                   "baseline and the method, rns,cnsdiff); each is also compared with the uniform one when it is listed")
    b.add_argument("--epochs", type=int, default=1, help="epochs per timed round")
    b.add_argument("--repeats", type=int, default=3, help="timed rounds (the samplers' epochs interleaved); "
                   "the median round is reported")
    b.add_argument("--cuda-graph", action="store_true", help="the graphed training step (cuda_graph setting); "
                   "on a CPU its static step runs eagerly")
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
