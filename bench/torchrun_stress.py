"""Exit codes of ``art-wdat evaluate`` and ``finetune`` under torchrun, over many consecutive runs.

    python bench/torchrun_stress.py [--runs 50] [--quick] [--commands finetune,evaluate] [--json PATH]

Each run is ``python -m torch.distributed.run --standalone --nproc_per_node=2 -m art_wdat <command> ...`` on a
tiny model and data set (8×8 inputs, 3 classes, 25 test and 28 train images, 3 attack steps, one epoch,
``--threads 1``): the smallest settings that still go through the whole path of a real job (joining the
process group, the collectives of the attack and the trainer, the optimizer that imports ``torch._dynamo``,
leaving the group, interpreter exit). A run fails when torchrun exits non-zero or a rank's stderr says
"terminate called" (the gloo abort at exit that :mod:`art_wdat.distributed` fixes). Prints one line per failure
and a summary; exits 1 if any run failed. ``--quick`` does 3 runs of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ABORT = "terminate called"
COMMON = ["--dataset", "npz:tiny.npz", "--max-iter", "3", "--threads", "1", "-q"]
ARGS = {
    "finetune": ["finetune", "--model", "tiny.pt", "--eps", "0.1", "--lr", "0.01", "--batch-size", "7",
                 "--out", "ranks.pt", *COMMON],
    "evaluate": ["evaluate", "--model", "tiny.pt", "--eps", "0.2", "--attacks", "wpgd,wpgd-budget",
                 "--out", "ranks", *COMMON],
}


def make_tiny(folder: Path) -> None:
    """The tiny data set and checkpoint of tests/test_distributed_evaluation.py, in ``folder``."""
    import numpy as np
    import torch

    from art_wdat.zoo import SmallCNN, save_checkpoint_model

    rng = np.random.default_rng(0)
    np.savez(folder / "tiny.npz", x_test=rng.random((25, 1, 8, 8), dtype=np.float32), y_test=rng.integers(0, 3, 25),
             x_train=rng.random((28, 1, 8, 8), dtype=np.float32), y_train=rng.integers(0, 3, 28))
    torch.manual_seed(0)
    model = SmallCNN(1, 3, 8, width=4)
    save_checkpoint_model(folder / "tiny.pt", model, model.state_dict(), {"input_shape": [1, 8, 8], "nb_classes": 3})


def run_once(command: str, folder: Path, timeout: float) -> dict:
    """One torchrun launch of ``command`` in ``folder``: its exit status, whether a rank aborted, its time."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    try:
        done = subprocess.run([*launcher, "-m", "art_wdat", *ARGS[command]], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=timeout)
        rc, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as err:
        rc, stderr = None, (err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or "") + "\n[timeout]"
    return {"command": command, "rc": rc, "abort": ABORT in stderr, "seconds": time.perf_counter() - start,
            "stderr_tail": stderr[-2000:]}


def stress(commands: list[str], runs: int, timeout: float) -> list[dict]:
    """``runs`` consecutive launches of each command (all of the first, then all of the next)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="torchrun-stress-") as tmp:
        folder = Path(tmp)
        make_tiny(folder)
        for command in commands:
            for i in range(1, runs + 1):
                result = run_once(command, folder, timeout)
                results.append(result)
                if result["rc"] != 0 or result["abort"]:
                    print(f"{command} run {i}: exit {result['rc']}, abort {result['abort']}\n"
                          f"{result['stderr_tail']}", flush=True)
                elif i % 10 == 0:
                    print(f"{command}: {i}/{runs} runs done", flush=True)
    return results


def summary(results: list[dict]) -> dict:
    """Per command: runs, non-zero exits, aborts, mean seconds."""
    out = {}
    for command in dict.fromkeys(r["command"] for r in results):
        mine = [r for r in results if r["command"] == command]
        out[command] = {"runs": len(mine), "nonzero_exits": sum(r["rc"] != 0 for r in mine),
                        "terminate_called": sum(r["abort"] for r in mine),
                        "mean_seconds": round(sum(r["seconds"] for r in mine) / len(mine), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="consecutive runs of each command (default 50)")
    parser.add_argument("--quick", action="store_true", help="3 runs of each command")
    parser.add_argument("--commands", default="finetune,evaluate", help="comma-separated: finetune, evaluate")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one launch may take")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in commands if c not in ARGS]
    if unknown or not commands:
        parser.error(f"--commands: unknown {unknown}; choose from {sorted(ARGS)}")
    runs = 3 if args.quick else args.runs
    import torch

    started = time.time()
    table = summary(stress(commands, runs, args.timeout))
    report = {"torch": torch.__version__, "python": sys.version.split()[0], "cpus": os.cpu_count(),
              "wall_seconds": round(time.time() - started, 1), "commands": table}
    for command, row in table.items():
        print(f"{command}: {row['runs']} runs, {row['nonzero_exits']} non-zero exit(s), "
              f"{row['terminate_called']} 'terminate called', {row['mean_seconds']} s per run")
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = sum(row["nonzero_exits"] + row["terminate_called"] for row in table.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
