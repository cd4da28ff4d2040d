"""The command line end to end, in subprocesses, as a script would use it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env_extra=None, check=True):
    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-m", "cnsdiff_core", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_train_json_summary_and_runs_listing(tmp_path):
    env = {"CNSDIFF_RUNS": str(tmp_path / "runs")}
    out = cli("train", "--dataset", "sample", "--shift", "popularity", "--sampler", "rns,cnsdiff",
              "--preset", "demo", "--epochs", "2", "--json", "--maps", "pca", env_extra=env)
    lines = [json.loads(x) for x in out.stdout.strip().splitlines()]
    assert [x["sampler"] for x in lines] == ["rns", "cnsdiff"]
    last = lines[-1]
    for key in ("run_id", "dataset", "shift", "sampler", "preset", "device", "epochs_run", "best_epoch",
                "seconds_per_epoch", "metrics", "fhn"):
        assert key in last
    assert last["shift"] == "popularity" and last["epochs_run"] == 2
    assert set(last["metrics"]) == {"iid", "ood"}
    assert set(last["metrics"]["ood"]) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit") for k in (10, 20)}
    assert 0 <= last["fhn"]["observed"] <= 1 and "true" in last["fhn"]  # the sample world has ground truth
    # the FHN contract: trained-on rate with its interval, collapse share, pre-mix rate and null
    f, r = last["fhn"], lines[0]["fhn"]
    lo, hi = f["observed_ci"]
    assert lo <= f["observed"] <= hi and 0 <= f["own_positive"] <= 1
    assert 0 <= f["synthesized"] <= 1 and 0 <= f["null"] <= 1 and f["epoch"] == last["best_epoch"]
    assert r["synthesized"] is None and r["null"] is None and r["own_positive"] == 0  # RNS: an item sampler
    assert "batch" in out.stderr  # the progress bar goes to stderr
    listed = cli("runs", env_extra=env).stdout
    assert last["run_id"] in listed and lines[0]["run_id"] in listed
    # each run's map is stored with it once trained (--maps pca: the UMAP compile is left out here)
    folder = tmp_path / "runs" / last["run_id"]
    assert (folder / "projection_pca.npz").is_file() and not (folder / "projection_umap.npz").exists()
    assert "maps: fitting the PCA map" in out.stderr


def test_train_rejects_an_unknown_map_in_one_sentence(tmp_path):
    out = cli("train", "--dataset", "sample", "--maps", "pca,tsne", check=False,
              env_extra={"CNSDIFF_RUNS": str(tmp_path / "runs")})
    assert out.returncode == 2 and "map 'tsne' is unknown" in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_bad_input_is_one_sentence_not_a_traceback(tmp_path):
    env = {"CNSDIFF_RUNS": str(tmp_path / "runs")}
    for args, needle in [
        (("train", "--dataset", "nope-not-here"), "neither a known name"),
        (("train", "--set", "lr=abc"), "lr='abc' is not a valid float"),
        (("train", "--dataset", "food", "--shift", "popularity"), "does not support shift"),
        (("import", str(tmp_path / "missing.csv"), "--name", "x"), "does not exist"),
    ]:
        out = cli(*args, env_extra=env, check=False)
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr and "Traceback" not in out.stderr
        assert out.stderr.strip().count("\n") == 0  # one line


def test_import_registers_a_dataset_and_never_overwrites(tmp_path):
    env = {"CNSDIFF_DATA": str(tmp_path / "data"), "CNSDIFF_RUNS": str(tmp_path / "runs")}
    src = ROOT / "sample_data" / "examples" / "ratings.csv"
    out = cli("import", str(src), "--name", "mine", env_extra=env)
    assert "imported mine" in out.stdout
    stored = tmp_path / "data" / "mine"
    assert (stored / "ratings.csv").read_bytes() == src.read_bytes()
    again = cli("import", str(src), "--name", "mine", env_extra=env, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (stored / "ratings.csv").exists()
    listing = cli("datasets", env_extra=env).stdout
    assert any(line.startswith("mine\timported") for line in listing.splitlines())
    trained = cli("train", "--dataset", "mine", "--sampler", "rns", "--preset", "demo", "--epochs", "1", "--json",
                  "--maps", "none", env_extra=env)
    assert json.loads(trained.stdout.strip().splitlines()[-1])["dataset"] == "mine"
    forced = cli("import", str(ROOT / "sample_data" / "examples" / "ratings.inter"), "--name", "mine", "--force",
                 env_extra=env)
    assert "imported mine" in forced.stdout and (stored / "ratings.inter").exists()
    assert not (stored / "ratings.csv").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["mine"]  # no temporary leftovers


def test_datasets_lists_counts():
    out = cli("datasets").stdout.splitlines()
    sample = next(line for line in out if line.startswith("sample\t"))
    cols = sample.split("\t")
    assert cols[2] == "600" and cols[3] == "800"


def test_bench_prints_speed_ratio_and_where_the_time_goes():
    out = cli("bench", "--datasets", "sample", "--epochs", "1", "--repeats", "2", "--device", "cpu",
              "--threads", "1").stdout
    assert "measured fp32 matmul throughput" in out and "cpu (1 thread)" in out
    assert "median of 2 rounds" in out and "interleaved" in out
    for sampler in ("rns", "cnsdiff"):
        line = next(l for l in out.splitlines() if l.startswith(sampler))
        assert "s/epoch (CPU time" in line and "GFLOP/epoch" in line and "% of the measured matmul peak" in line
        rounds = [float(x) for x in line.split("rounds ")[1].split(";")[0].split(", ")]
        assert len(rounds) == 2 and float(line.split()[1]) == pytest.approx(sum(rounds) / 2, abs=1e-3)
    assert "where the time goes: " in out and "synthesis" in out
    ratio = float(out.split("CNSDiff / RNS time per epoch:")[1].split("x")[0])
    assert ratio > 0 and "(CPU time: " in out
    floor = next(l for l in out.splitlines() if l.startswith("floor: "))
    bound = float(floor.split("cannot go below ")[1].split("x")[0])
    assert bound > 1 and "synthesis products" in floor and "random draws" in floor
    total = float(floor.split("alone take ")[1].split(" s/epoch")[0])
    parts = floor.split("at best (")[1].split(")")[0].split(", ")
    assert sum(float(part.rsplit(" ", 1)[1]) for part in parts) == pytest.approx(total, abs=0.003)


def test_cnsdiff_floor_counts_only_the_work_the_config_asks_for():
    from cnsdiff_core.bench import cnsdiff_floor
    from cnsdiff_core.config import preset_config

    full = cnsdiff_floor(preset_config("tuned", sampler="cnsdiff"), 3000, repeats=2)
    assert set(full) == {"synthesis products", "contrastive products", "denoiser products", "random draws",
                         "exponentials"} and all(v > 0 for v in full.values())
    bare = cnsdiff_floor(preset_config("tuned", sampler="cnsdiff", cl_weight=0.0, train_denoiser=False), 3000,
                         repeats=2)
    assert bare["contrastive products"] == 0 and bare["denoiser products"] == 0
    assert bare["synthesis products"] > 0 and bare["random draws"] > 0


def test_bench_times_the_samplers_asked_for_against_the_uniform_one():
    out = cli("bench", "--datasets", "sample", "--samplers", "rns,mixgcf,dns", "--epochs", "1", "--repeats", "1",
              "--device", "cpu", "--threads", "1").stdout
    timed = [l.split()[0] for l in out.splitlines() if l.split()[:1] and l.split()[0] in ("rns", "mixgcf", "dns", "cnsdiff")]
    assert timed == ["rns", "mixgcf", "dns"]
    for label in ("MixGCF / RNS", "DNS / RNS"):
        assert float(out.split(f"{label} time per epoch:")[1].split("x")[0]) > 0
    assert "CNSDiff / RNS" not in out


def test_bench_names_an_unknown_sampler_before_loading_anything():
    res = cli("bench", "--datasets", "sample", "--samplers", "rns,nope", "--device", "cpu", check=False)
    assert res.returncode != 0 and "sampler 'nope' is unknown" in res.stderr
    assert "measured fp32" not in res.stdout


def test_epoch_flops_counts_each_synthesis_chain_for_its_own_length_on_cpu():
    from cnsdiff_core.bench import epoch_flops
    from cnsdiff_core.config import preset_config

    cfg = preset_config("tuned", sampler="cnsdiff", batch_size=100)
    lengths = [s - cfg.stop_for(s) for s in cfg.hardness_steps()]
    assert lengths == [2, 3, 3, 3, 3]
    per_call = 2 * 100 * (64 * 64 + 64 * 64)
    cpu = epoch_flops(cfg, 1000, 50, 60, "cpu")["synthesis"]
    cuda = epoch_flops(cfg, 1000, 50, 60, "cuda")["synthesis"]
    assert cpu == sum(lengths) * per_call * 10 and cuda == 5 * 3 * per_call * 10
