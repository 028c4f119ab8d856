"""Recompute a finished run's results with this version's statistics, into a copy.

    python benchmarks/recompute_results.py RUN_DIR OUT_DIR [--no-report] \
        [--set data.subject_unit="capture session" --set data.labels_from_landmarks=true]

Copies RUN_DIR's files except the CNN checkpoints (the statistics read the jobs' predictions,
never their weights) into OUT_DIR, then recomputes everything the results stage writes
(recalibration, both levels, estimands, calibration, comparisons, audit tables) from the
jobs' predictions.csv and val_predictions.csv, and rebuilds the report. The run folder
itself is never changed. This is how docs/results.md measures a change of the statistics on
run folders made before it (same folds, same fold models). `--set` may change only settings
that leave the config's fingerprint alone (the words the report uses, e.g. the unit's name
and the declaration that labels come from the landmarks), and writes them into the copy.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import yaml

from posturescreen import runfolder as rf
from posturescreen.config.study import load_config
from posturescreen.report import build_report
from posturescreen.study.results import collect_predictions, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--set", action="append", default=[], dest="sets",
                    help="KEY=VALUE of a setting that does not change results")
    args = ap.parse_args()
    if args.out_dir.exists():
        raise SystemExit(f"{args.out_dir} exists: choose a new folder")
    shutil.copytree(args.run_dir, args.out_dir,
                    ignore=shutil.ignore_patterns(rf.CHECKPOINT, "cams", "mlruns"))
    cfg, _ = rf.load_run(args.out_dir)
    if args.sets:
        new = load_config(None, args.sets, base=cfg.model_dump(mode="json"))
        if new.fingerprint() != cfg.fingerprint():
            raise SystemExit("--set may only change settings that leave results alone")
        record = rf.read_record(args.out_dir)
        record.update(new.model_dump(mode="json"))
        (args.out_dir / rf.CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
        cfg = new
    jobs = [rf.Job(t.name, m.name, k) for t in cfg.tasks for m in cfg.models
            for k in rf.fold_numbers(args.out_dir, t.name, m.name)]
    t0 = time.perf_counter()
    test = collect_predictions(args.out_dir, jobs, cfg.data.subject_column)
    val = collect_predictions(args.out_dir, jobs, cfg.data.subject_column,
                              name=rf.VAL_PREDICTIONS)
    write_results(cfg, args.out_dir, predictions=test, val_predictions=val)
    print(f"results: {time.perf_counter() - t0:.1f} s")
    if not args.no_report:
        print(f"report: {build_report(args.out_dir)}")


if __name__ == "__main__":
    main()
