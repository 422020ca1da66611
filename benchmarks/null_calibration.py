"""Are medablate's verdicts calibrated? A/A studies (nothing differs) should be called significant in about 5% of
cases at alpha 0.05, no more; A/B studies (a real difference) show how often it is found at a given number of seeds.

    python benchmarks/null_calibration.py                 # 40 seeds per pool, 1000 draws per cell (~15 min here)
    python benchmarks/null_calibration.py --seeds 20 --draws 300 --epochs 3     # a quick look
    python benchmarks/null_calibration.py --kfold                 # the corrected resampled t over folds (~10 min)

One study is trained once: a small phantom MLP with `--seeds` seeds at lr 1e-3 (the pool "A") and the same seeds
at lr 1e-4 (the pool "B": a learning rate 10x off, a real and known effect). Then, for 3, 5 and 10 seeds:
- A/A: `--draws` times, 2k seeds of pool A are drawn without replacement, split into a "level" and a "reference"
  trial of k seeds each (the same configuration), paired at random, and medablate's own comparison code
  (analysis/compare.py: seed_row, image_row, auc_row) compares them: the paired t-test over seeds (the default),
  Wilcoxon's signed-rank test (analysis.test: wilcoxon), the exact sign-flip test, and, on the seed ensembles'
  test images, McNemar, the paired bootstrap CI over images and DeLong. Printed: the share called significant
  with its binomial 95% CI (Clopper-Pearson), primary outcome (test accuracy) and secondary ones.
- Holm: 3 levels against one reference (4k seeds; k = 10 takes all 40), Holm over the 3 primary tests: the share
  of studies with any significant verdict (the family-wise error rate).
- A/B: k seeds of pool A against the same k seeds of pool B (paired by seed, as a study pairs them): the share
  found significant by the paired t-test on test accuracy, beside the seeds `seeds_needed` predicts from all pairs.

With --kfold the pool is a cross-validated study instead: 5 folds x 2 repeats (each a run per seed, `--seeds`
10 by default) at lr 1e-3 and at lr 1e-4. An A/A study with J folds takes, on each fold, two different seeds of
pool A as its "level" and "reference" run; the corrected resampled t-test (compare.fold_row, the verdict of a
k-fold comparison) and, for contrast, a plain paired t over the same fold differences are applied, with J = 5
(the first repeat) and J = 10 (both). A/B takes one seed of pool A and of pool B per fold.

The draws reuse one pool of trained runs, so they are not independent studies: the CIs are a guide. The unit of
McNemar, the bootstrap and DeLong is the image: they ask whether two sets of trained models differ on these test
images, which two trainings of one configuration almost always do, so they are expected to fail this check; that
is why they never give a comparison's verdict (README, "Which differences are real").
"""

from __future__ import annotations

import argparse
import functools
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import stats as st

REPO = Path(__file__).resolve().parents[1]
SEED_COUNTS = (3, 5, 10)
ALPHA = 0.05


KFOLD = {"method": "kfold", "folds": 5, "repeats": 2}


def study_text(seeds: int, epochs: int, kfold: bool = False) -> dict:
    return {"name": "null-calibration", "seeds": list(range(seeds)),
            "data": {"image_size": 24, "phantom": {"count_per_class": 150},
                     "split": KFOLD if kfold else {"method": "course", "train_per_class": 100}},
            "test": {"phantom": {"count_per_class": 150}},
            "model": {"hidden": [64, 32], "dropout": [0.3, 0.2]},
            "training": {"epochs": epochs, "batch_size": 32, "checkpoint_every": "auto"},
            "comparisons": [{"name": "lr", "vary": {"training.optimizer.lr": [0.001, 0.0001]}}]}


def train(out: Path, seeds: int, epochs: int, kfold: bool = False) -> None:
    path = out.parent / "study.yaml"
    path.write_text(yaml.safe_dump(study_text(seeds, epochs, kfold), sort_keys=False))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "medablate.cli", "run", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    runs = 2 * seeds * (KFOLD["folds"] * KFOLD["repeats"] if kfold else 1)
    print(f"trained {runs} runs in {time.perf_counter() - started:.0f} s ({out})", flush=True)


def binomial_ci(hits: int, n: int) -> tuple[float, float]:
    ci = st.binomtest(hits, n).proportion_ci(0.95, method="exact")
    return ci.low, ci.high


def rate(hits: int, n: int) -> str:
    low, high = binomial_ci(hits, n)
    flag = "" if low <= ALPHA <= high else (" HIGH" if low > ALPHA else " low")
    return f"{hits / n:.3f} ({low:.3f}-{high:.3f}){flag}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeds per pool (at least 40 for k = 10 with Holm)")
    parser.add_argument("--draws", type=int, default=1000, help="A/A and A/B studies drawn per number of seeds")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, help="a trained pool to reuse (the folder `medablate run` wrote)")
    parser.add_argument("--kfold", action="store_true", help="calibrate the corrected resampled t-test over folds")
    args = parser.parse_args()
    if args.kfold:
        return kfold_main(args)
    from medablate.analysis import compare, stats
    from medablate.analysis.outcomes import OUTCOMES, is_tested, run_outcomes
    from medablate.execute.plan import load_study_folder
    from medablate.folder import rundir

    out = args.out or Path(tempfile.mkdtemp(prefix="null-calibration-")) / "out"
    if args.out is None:
        train(out, args.seeds, args.epochs)
    study, plan, _ = load_study_folder(out)
    # every draw reads the same predictions files again: read each once
    arrays, rows = functools.cache(rundir.read_prediction_arrays), functools.cache(rundir.read_predictions)
    rundir.read_prediction_arrays = lambda path, names: arrays(path, tuple(names))  # type: ignore[assignment]
    rundir.read_predictions = rows  # type: ignore[assignment]
    pools = {trial.id: [rundir.trial_dir(out, rundir.run_id(trial.id, s)) for s in plan.seeds] for trial in plan.trials}
    base, slow = (pools[t.id] for t in plan.trials)
    values = {d: run_outcomes(d, study.analysis) for pool in pools.values() for d in pool}
    tested = [o for o in OUTCOMES if is_tested(o) and all(math.isfinite(values[d][o.key]) for d in base)]
    rng = np.random.default_rng(0)
    accuracy = np.mean([values[d]["test_acc"] for d in base])
    print(f"pool A: {len(base)} seeds, mean test accuracy {accuracy:.3f}; pool B (lr 10x lower): "
          f"{np.mean([values[d]['test_acc'] for d in slow]):.3f}; {args.draws} draws per cell", flush=True)

    print("\n## A/A: share called significant at 0.05 (binomial 95% CI); about 0.05 is calibrated\n")
    print("| test | unit | outcome | " + " | ".join(f"{k} seeds" for k in SEED_COUNTS) + " |")
    print("|---|---|---|" + "---|" * len(SEED_COUNTS))
    hits: dict[tuple[str, str, str], dict[int, int]] = {}
    counts = [k for k in SEED_COUNTS if 2 * k <= len(base)]
    for k in counts:
        for _ in range(args.draws):
            chosen = rng.choice(len(base), 2 * k, replace=False)
            level, reference = [base[i] for i in chosen[:k]], [base[i] for i in chosen[k:]]
            for outcome in tested:
                a = np.array([values[d][outcome.key] for d in level])
                b = np.array([values[d][outcome.key] for d in reference])
                d = a - b
                role = "primary" if outcome.key == "test_acc" else "secondary"
                for test, p in (("paired t (default)", compare.seed_row(study, outcome, a, b)["p"]),
                                ("Wilcoxon signed-rank", stats.paired_p_value(d, "wilcoxon")),
                                ("sign-flip permutation", stats.sign_flip_p(d))):
                    key = (test, "seeds", f"{outcome.key} ({role})")
                    hits.setdefault(key, {}).setdefault(k, 0)
                    hits[key][k] += int(p < ALPHA)
            image = compare.image_row(study, level, reference)
            auc = compare.auc_row(study, level, reference)
            for test, significant in (
                    ("McNemar", image is not None and image["p"] < ALPHA),
                    ("bootstrap CI over images", image is not None and (image["ci_low"] > 0 or image["ci_high"] < 0)),
                    ("DeLong", auc is not None and auc["p"] < ALPHA)):
                key = (test, "images", "test set (seed ensembles)")
                hits.setdefault(key, {}).setdefault(k, 0)
                hits[key][k] += int(significant)
        print(f"  ... {k} seeds done", file=sys.stderr, flush=True)
    for (test, unit, outcome), by_k in hits.items():
        print(f"| {test} | {unit} | {outcome} | " + " | ".join(rate(by_k[k], args.draws) if k in by_k else "--"
                                                              for k in SEED_COUNTS) + " |")

    print("\n## Holm over 3 primary tests (3 levels against one reference, all A/A): family-wise error rate\n")
    print("| seeds | any significant after Holm | without Holm |")
    print("|---|---|---|")
    primary = next(o for o in OUTCOMES if o.key == "test_acc")
    for k in SEED_COUNTS:
        if 4 * k > len(base):
            print(f"| {k} | needs {4 * k} seeds in the pool | |")
            continue
        family, raw = 0, 0
        for _ in range(args.draws):
            chosen = rng.choice(len(base), 4 * k, replace=False)
            groups = [[values[base[i]]["test_acc"] for i in chosen[j * k:(j + 1) * k]] for j in range(4)]
            p = [compare.seed_row(study, primary, np.array(g), np.array(groups[0]))["p"] for g in groups[1:]]
            family += int(any(q < ALPHA for q in stats.holm(p)))
            raw += int(any(q < ALPHA for q in p))
        print(f"| {k} | {rate(family, args.draws)} | {raw / args.draws:.3f} |")

    print("\n## A/B: lr 1e-3 against lr 1e-4 (a real effect), paired t on test accuracy\n")
    differences = np.array([values[a]["test_acc"] - values[b]["test_acc"] for a, b in zip(base, slow, strict=True)])
    needed = stats.seeds_needed(differences)
    print(f"over all {len(differences)} seed pairs: mean difference {differences.mean() * 100:+.1f} points, SD "
          f"{differences.std(ddof=1) * 100:.1f}; seeds_needed (80% power) predicts {needed}\n")
    print("| seeds | detected (significant, in the right direction) |")
    print("|---|---|")
    for k in (2, 3, 5, 10):
        found = 0
        for _ in range(args.draws):
            chosen = rng.choice(len(base), k, replace=False)
            a = np.array([values[base[i]]["test_acc"] for i in chosen])
            b = np.array([values[slow[i]]["test_acc"] for i in chosen])
            row = compare.seed_row(study, primary, a, b)
            found += int(row["p"] < ALPHA and np.sign(row["difference"]) == np.sign(differences.mean()))
        low, high = binomial_ci(found, args.draws)
        print(f"| {k} | {found / args.draws:.3f} ({low:.3f}-{high:.3f}) |")
    print(f"\ntrained runs kept in {out} (rerun the analysis alone with --out {out})")
    return 0


def fold_hits(first: list, second: list, pick, draws: int, ratio: float, direction: bool) -> tuple[int, int]:
    """Of `draws` studies (pick() gives each fold's (first, second) seed), how many the corrected resampled t and a
    plain paired t over folds call significant at ALPHA (with direction: and the first pool better)."""
    from medablate.analysis import compare, stats
    from medablate.analysis.outcomes import BY_KEY

    corrected = plain = 0
    for _ in range(draws):
        chosen = pick()
        a = np.array([first[j][i]["test_acc"] for j, (i, _) in enumerate(chosen)])
        b = np.array([second[j][k]["test_acc"] for j, (_, k) in enumerate(chosen)])
        right = not direction or a.mean() > b.mean()
        corrected += int(compare.fold_row(BY_KEY["test_acc"], a, b, ratio)["p"] < ALPHA and right)
        plain += int(stats.paired_p_value(a - b) < ALPHA and right)
    return corrected, plain


def kfold_main(args: argparse.Namespace) -> int:
    """A/A and A/B over folds: the corrected resampled t-test against a plain paired t over the same folds."""
    from medablate.analysis.outcomes import TEST_OVER_TRAIN, run_outcomes
    from medablate.execute.plan import load_study_folder
    from medablate.folder import rundir

    seeds = args.seeds if args.seeds != 40 else 10
    out = args.out or Path(tempfile.mkdtemp(prefix="null-calibration-kfold-")) / "out"
    if args.out is None:
        train(out, seeds, args.epochs, kfold=True)
    study, plan, _ = load_study_folder(out)
    # pools[trial][fold index] = the outcomes of each seed's run on that fold
    pools = {t.id: [[run_outcomes(rundir.trial_dir(out, rundir.run_id(t.id, s, f)), study.analysis)
                     for s in plan.seeds] for f in plan.folds] for t in plan.trials}
    base, slow = (pools[t.id] for t in plan.trials)
    ratio = float(np.mean([v[TEST_OVER_TRAIN] for fold in base for v in fold]))
    rng = np.random.default_rng(0)
    print(f"pool A: {len(plan.seeds)} seeds x {len(plan.folds)} folds (5 x 2 repeats), mean test accuracy "
          f"{np.mean([v['test_acc'] for fold in base for v in fold]):.3f}; pool B (lr 10x lower): "
          f"{np.mean([v['test_acc'] for fold in slow for v in fold]):.3f}; n_test/n_train {ratio:.3f}; "
          f"{args.draws} draws per cell", flush=True)
    print("\n## A/A over folds: share called significant at 0.05 (binomial 95% CI)\n")
    print("| test | J = 5 folds | J = 10 (5 folds x 2 repeats) |")
    print("|---|---|---|")
    hits: dict[int, tuple[int, int]] = {}
    for folds in (5, 10):  # A/A: two different seeds of pool A on each fold
        hits[folds] = fold_hits(base, base, lambda n=folds: [rng.choice(len(plan.seeds), 2, replace=False)
                                                             for _ in range(n)], args.draws, ratio, False)
    for column, test in enumerate(("corrected resampled t (the verdict)", "plain paired t over folds (not used)")):
        print(f"| {test} | {rate(hits[5][column], args.draws)} | {rate(hits[10][column], args.draws)} |")
    print("\n## A/B over folds: lr 1e-3 against lr 1e-4, one seed per fold and trial\n")
    print("| test | J = 5 folds | J = 10 (5 folds x 2 repeats) |")
    print("|---|---|---|")
    found: dict[int, tuple[int, int]] = {}
    for folds in (5, 10):  # A/B: a seed of pool A against a seed of pool B on each fold
        found[folds] = fold_hits(base, slow, lambda n=folds: rng.integers(len(plan.seeds), size=(n, 2)), args.draws,
                                 ratio, True)
    for column, test in enumerate(("corrected resampled t (the verdict)", "plain paired t over folds")):
        print(f"| {test} | {found[5][column] / args.draws:.3f} | {found[10][column] / args.draws:.3f} |")
    print(f"\ntrained runs kept in {out} (rerun the analysis alone with --kfold --out {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
