"""The ``art-wdat`` command line: demo --quick, evaluate/finetune on npz + a local checkpoint, readable errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from art_wdat import cli
from art_wdat.cli import commands, threads
from art_wdat.cli.demo import DemoReport
from art_wdat.zoo import SmallCNN, save_checkpoint_model


def run(argv, capsys) -> tuple[int, str, str]:
    # One torch thread: tiny models on a shared 2-core machine (the demo picks 1 itself).
    if argv and argv[0] in ("evaluate", "finetune"):
        argv = [*argv, "--threads", "1"]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- argument parsing ----------------------------------------------------------------------------------


def test_parse_budgets():
    assert cli.parse_budgets("8/255, 0.1,0") == pytest.approx([8 / 255, 0.1, 0.0])
    for bad in ("abc", "-1", "1/0", ",", "inf", "nan"):
        with pytest.raises(ValueError):
            cli.parse_budgets(bad)
    assert math.isinf(cli.parse_number("inf"))


def test_import_is_light_and_module_entry_point():
    code = ("import sys, art_wdat.cli, art_wdat.plotting; "
            "bad = [m for m in ('robustbench', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    done = subprocess.run([sys.executable, "-m", "art_wdat", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "evaluate", "finetune"):
        assert command in done.stdout
    bad = subprocess.run([sys.executable, "-m", "art_wdat", "evaluate", "--model", "x", "--dataset", "digits",
                          "--eps", "8/two"], capture_output=True, text=True)
    assert_one_line_error(bad.returncode, bad.stderr, "--eps", "8/two")


def test_norm_one_is_accepted_like_the_api():
    parser = cli.build_parser()
    for command in (["evaluate"], ["finetune", "--out", "x.pt"]):
        args = parser.parse_args([*command, "--model", "m.pt", "--dataset", "digits", "--norm", "1"])
        assert args.norm == 1.0


# -- threads -------------------------------------------------------------------------------------------

#: Two sockets of two cores, each core with two hyper-threads: 8 logical CPUs, 4 physical cores.
CPUINFO = "\n\n".join(f"processor\t: {cpu}\nphysical id\t: {cpu // 4}\ncore id\t\t: {cpu % 4 // 2}\n"
                      for cpu in range(8))


def test_physical_cores_count_each_core_once_within_the_affinity_mask(tmp_path):
    assert threads._cores_in_cpuinfo(None, CPUINFO) == 4
    assert threads._cores_in_cpuinfo({0, 1, 2}, CPUINFO) == 2  # CPUs 0 and 1 are one core's two threads
    assert threads._cores_in_cpuinfo(None, "processor : 0\nmodel name : arm\n") is None  # no core ids
    quota = tmp_path / "cpu.max"
    for text, cpus in (("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), ("junk", None)):
        quota.write_text(text)
        assert threads._cpu_quota(quota) == cpus
    assert threads._cpu_quota(tmp_path / "absent") is None
    assert threads.physical_cores() >= 1


def test_default_threads_share_the_cores_among_local_ranks(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 8)
    for local, expected in ((None, 8), ("2", 4), ("3", 2), ("16", 1), ("bad", 8)):
        if local is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
        assert threads.default_threads() == expected
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "physical_cores", lambda: 1)
        assert threads.set_threads() == 1 and torch.get_num_threads() == 1
        assert threads.set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_every_command_has_threads_defaulting_to_the_physical_cores(monkeypatch):
    parser = cli.build_parser()
    for command in (["demo"], ["evaluate", "--model", "m.pt", "--dataset", "digits"],
                    ["finetune", "--model", "m.pt", "--dataset", "digits", "--out", "x.pt"]):
        assert parser.parse_args(command).threads is None  # None: the command applies its default
        assert parser.parse_args([*command, "--threads", "3"]).threads == 3
    code = cli.main(["evaluate", "--model", "m.pt", "--dataset", "digits", "--threads", "0"])
    assert code == 2
    applied = []
    monkeypatch.setattr(commands, "set_threads", applied.append)
    args = parser.parse_args(["finetune", "--model", "no-such.pt", "--dataset", "digits", "--out", "x.pt"])
    with pytest.raises(FileNotFoundError):
        commands.cmd_finetune(args)
    assert applied == [None]  # None: set_threads' default, the physical cores


# -- the demo ------------------------------------------------------------------------------------------


def test_demo_quick_writes_the_report_and_is_reproducible(tmp_path, capsys, monkeypatch):
    from art_wdat.cli import ranges

    threads = torch.get_num_threads()
    code, out, _ = run(["demo", "--quick", "--out", str(tmp_path / "a"), "--seed", "5", "-q"], capsys)
    assert code == 0
    assert torch.get_num_threads() == threads  # main() gives the caller its thread setting back
    for name in ("report.json", "report.md", "curve.png", "knapsack_curve.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert "| budget δ | quantity | TRADES | W-TRADES fine-tune | change |" in out
    report = DemoReport.from_json((tmp_path / "a" / "report.json").read_text())
    for result in (report.before, report.after):
        assert result.clean_accuracy > 0.5  # even the quick model learns something
        for row in result.budgets:
            assert all(0.0 <= o.accuracy <= 1.0 for o in row.attacks.values())
            assert row.r_upper >= row.r_lower
    assert "W-PGD-Budget" in (tmp_path / "a" / "report.md").read_text()
    assert len(repr(report)) < 200 and repr(report).startswith("DemoReport(quick settings, seed 5: clean ")

    # The second run says where it falls against ranges made of the first: inside all of them, as it repeats it.
    monkeypatch.setattr(ranges, "RANGES_FILE", _ranges_of(report, tmp_path / "ranges.json"))
    code, out, _ = run(["demo", "--quick", "--out", str(tmp_path / "b"), "--seed", "5", "-q"], capsys)
    assert code == 0
    again = DemoReport.from_json((tmp_path / "b" / "report.json").read_text())
    assert again.table == report.table
    assert [r["accuracy"] for r in again.after.rows()] == [r["accuracy"] for r in report.after.rows()]
    cells = 3 * len(ranges.table_rows(report.before, report.after))
    assert f"(1 run: seed 5 at 1 torch thread; here): {cells} of {cells} cells inside." in out
    assert again.placement is not None and again.placement.inside == cells and not again.placement.outside
    assert f"{cells} of {cells} cells in range" in repr(again)


def _ranges_of(report: DemoReport, path):
    """A ranges file whose only run is ``report`` (as bench/readme_tables.py demo writes it)."""
    from art_wdat.cli import ranges

    rows = [{**row, **{c: [row[c]] for c in ranges.COLUMNS}} for row in ranges.table_rows(report.before, report.after)]
    entry = {"config": ranges.reference_config(report.config), "machine": "here", "rows": rows,
             "runs": [{"seed": report.config["seed"], "threads": report.config["torch_threads"]}]}
    path.write_text(json.dumps({"settings": {report.settings: entry}}))
    return path


def test_placement_names_the_cells_outside_their_range():
    from art_wdat.cli import ranges
    from art_wdat.evaluation import EvaluationResult
    from art_wdat.evaluation.report import AttackOutcome, BudgetResult

    def result(clean: float, wauto: float) -> EvaluationResult:
        budget = BudgetResult(0.1, clean, {"wauto": AttackOutcome(wauto, 1.0, 0.1)}, "wauto", wauto / clean, 0.2)
        return EvaluationResult(2.0, math.inf, 100, clean, 0.1, 0.1, "x", 4.0, 1.0, [budget], ["wauto"], 0, {})

    rows = ranges.table_rows(result(0.9, 0.5), result(0.95, 0.6))
    assert [(r["budget"], r["quantity"]) for r in rows] == [(None, "clean accuracy"), (None, "Υ (sensitivity)"),
                                                           (0.1, "W-AutoAttack"), (0.1, "R^u"), (0.1, "R^l")]
    assert rows[2]["change"] == pytest.approx(0.1)
    reference = {"rows": [{**r, **{c: [r[c] - 0.01, r[c] + 0.01] for c in ranges.COLUMNS}} for r in rows],
                 "runs": [{"seed": s, "threads": n} for s in range(5) for n in (1, 2)], "machine": "m"}
    inside = ranges.place(result(0.9, 0.5), result(0.95, 0.6), reference)
    assert (inside.inside, inside.outside, inside.runs) == (15, [], 10)
    assert inside.summary() == ("Against the README's ranges (10 runs: seeds 0–4 at 1 and 2 torch threads; m): "
                                "15 of 15 cells inside.")
    outside = ranges.place(result(0.9, 0.45), result(0.95, 0.6), reference)
    assert outside.inside == 11  # W-AutoAttack before and R^u before moved, and so did their changes
    assert "δ = 0.1, W-AutoAttack, TRADES: 0.4500 (below [0.4900, 0.5100])" in outside.outside
    assert "δ = 0.1, W-AutoAttack, change: 0.1500 (above [0.0900, 0.1100])" in outside.outside
    assert outside.summary().splitlines()[1:] == ["Outside:", *(f"  {line}" for line in outside.outside)]


# -- evaluate and finetune on npz data with a local checkpoint -------------------------------------------


@pytest.fixture()
def npz_and_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_test=rng.integers(0, 256, size=(24, 1, 8, 8), dtype=np.uint8), y_test=rng.integers(0, 3, 24),
             x_train=rng.random((32, 1, 8, 8), dtype=np.float32), y_train=rng.integers(0, 3, 32))
    np.savez(tmp_path / "test_only.npz", x_test=rng.random((8, 1, 8, 8), dtype=np.float32), y_test=np.zeros(8, int))
    torch.manual_seed(0)
    model = SmallCNN(1, 3, 8, width=4)
    ckpt = save_checkpoint_model(tmp_path / "tiny.pt", model, model.state_dict(),
                                 {"input_shape": [1, 8, 8], "nb_classes": 3})
    wrong = SmallCNN(3, 3, 8, width=4)
    save_checkpoint_model(tmp_path / "rgb.pt", wrong, wrong.state_dict(), {"input_shape": [3, 8, 8], "nb_classes": 3})
    return npz, ckpt


def test_evaluate_npz_with_local_checkpoint(npz_and_checkpoint, tmp_path, capsys):
    npz, ckpt = npz_and_checkpoint
    code, out, err = run(["evaluate", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--eps", "1/255,8/255",
                          "--max-iter", "2", "--n-samples", "16", "--out", str(tmp_path / "ev"), "-q"], capsys)
    assert code == 0, err
    assert "W-PGD-Budget" in out and "8/255" in out
    data = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert data["n_samples"] == 16 and len(data["budgets"]) == 2
    assert (tmp_path / "ev" / "curve.png").is_file()
    # W-AutoAttack ran (the default attacks): its flip costs give the knapsack's whole curve, stored and plotted.
    assert set(data["curve"]["accuracy"]) == {"1", "2", "inf"} and 8 / 255 in data["curve"]["deltas"]
    assert (tmp_path / "ev" / "knapsack_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "knapsack_curve.png" in out and "Knapsack curve" in out
    # The AutoAttack row is the autoattack package's custom version by default, and the report says so.
    assert data["settings"]["autoattack_version"] == "custom"
    assert any("version 'custom'" in note for note in data["notes"])


def test_evaluate_autoattack_version_and_apgd_art(npz_and_checkpoint, tmp_path, capsys):
    npz, ckpt = npz_and_checkpoint
    code, out, err = run(["evaluate", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--eps", "8/255",
                          "--attacks", "autoattack,apgd-art", "--autoattack-version", "standard", "--aa-iter", "3",
                          "--apgd-iter", "2", "--apgd-restarts", "2", "--n-samples", "8",
                          "--out", str(tmp_path / "ev"), "-q"], capsys)
    assert code == 0, err
    assert "AutoAttack" in out and "APGD (ART)" in out
    data = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert data["attacks"] == ["autoattack", "apgd-art"]
    settings = data["settings"]
    assert (settings["autoattack_version"], settings["autoattack_max_iter"]) == ("standard", 3)
    assert (settings["apgd_art_max_iter"], settings["apgd_art_restarts"]) == (2, 2)
    assert any("version 'standard' (3 iterations)" in note and "Not RobustBench's protocol" in note
               for note in data["notes"])
    code, _, err = run(["evaluate", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--autoattack-version", "plus"],
                       capsys)
    assert_one_line_error(code, err, "--autoattack-version", "plus")


def test_finetune_then_evaluate(npz_and_checkpoint, tmp_path, capsys):
    npz, ckpt = npz_and_checkpoint
    tuned = tmp_path / "tuned.pt"
    code, out, err = run(["finetune", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--out", str(tuned),
                          "--eps", "8/255", "--epochs", "1", "--max-iter", "2", "--batch-size", "16", "-q"], capsys)
    assert code == 0, err
    assert tuned.is_file() and "Wrote" in out
    code, out, err = run(["evaluate", "--model", str(tuned), "--dataset", f"npz:{npz}", "--eps", "4/255",
                          "--attacks", "pgd,wpgd", "--max-iter", "2", "-q"], capsys)
    assert code == 0, err
    assert "W-PGD" in out and "AutoAttack" not in out.split("Wall time")[0]


def test_finetune_records_the_variant_and_takes_its_flags(npz_and_checkpoint, tmp_path, capsys):
    from art_wdat.zoo.local import read_checkpoint

    npz, ckpt = npz_and_checkpoint
    base = ["finetune", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--eps", "8/255", "--epochs", "1",
            "--max-iter", "1", "--batch-size", "16", "-q"]
    chosen = {}
    for name, flags in (("default", []), ("given", ["--method", "wpgd", "--inner-loss", "redlr", "--outer-loss", "ce",
                                                     "--pointwise-beta", "0", "--cheapness-weight", "2"])):
        out = tmp_path / f"{name}.pt"
        code, _, err = run(base + ["--out", str(out)] + flags, capsys)
        assert code == 0, err
        extra = read_checkpoint(out)["extra"]
        chosen[name] = {k: extra[k] for k in ("method", "inner_loss", "outer_loss", "pointwise_beta",
                                              "cheapness_weight")}
    # No flag: the trainer's defaults (the study's choice); flags: exactly what was asked for.
    assert chosen["default"] == {"method": "knapsack", "inner_loss": "kl", "outer_loss": "trades",
                                 "pointwise_beta": 6.0, "cheapness_weight": 0.0}
    assert chosen["given"] == {"method": "wpgd", "inner_loss": "redlr", "outer_loss": "ce", "pointwise_beta": 0.0,
                               "cheapness_weight": 2.0}
    code, _, err = run(base + ["--out", str(tmp_path / "x.pt"), "--outer-loss", "mse"], capsys)
    assert_one_line_error(code, err, "--outer-loss", "mse")


def test_finetune_trades_selected_under_w2(npz_and_checkpoint, tmp_path, capsys):
    """--p inf trains TRADES; --select-p 2 keeps the epoch best under W_2, and the held-out table says W_2."""
    from art_wdat.zoo.local import read_checkpoint

    npz, ckpt = npz_and_checkpoint
    out = tmp_path / "trades.pt"
    code, text, err = run(["finetune", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--eps", "8/255", "--p", "inf",
                           "--select-p", "2", "--epochs", "2", "--val-every", "2", "--max-iter", "1", "--val-iter", "1",
                           "--batch-size", "16", "--val-split", "8", "--out", str(out), "-q"], capsys)
    assert code == 0, err
    assert "W-AutoAttack (W_2) @8/255" in text and "min-norm @8/255" in text
    extra = read_checkpoint(out)["extra"]
    assert (extra["p"], extra["select_p"], extra["val_every"]) == (math.inf, 2.0, 2)
    assert extra["validation"]["judge"]["select_p"] == 2.0
    assert [h["epoch"] for h in extra["history"] if "val_clean_acc" in h] == [2]  # --val-every 2: the last only
    assert "--p 2 " in text  # the evaluate line suggested: the order the epochs were chosen by
    code, _, err = run(["finetune", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--select-p", "0.5",
                        "--out", str(out)], capsys)
    assert_one_line_error(code, err, "--select-p")


def test_finetune_says_why_there_is_no_held_out_split(npz_and_checkpoint, tmp_path, capsys):
    """With fewer than 10 images the default split is empty: the CLI says so, not "(--val-split 0)"."""
    npz, ckpt = npz_and_checkpoint
    rng = np.random.default_rng(1)
    few = tmp_path / "few.npz"
    np.savez(few, x_train=rng.random((8, 1, 8, 8), dtype=np.float32), y_train=rng.integers(0, 3, 8),
             x_test=rng.random((2, 1, 8, 8), dtype=np.float32), y_test=rng.integers(0, 3, 2))
    base = ["finetune", "--model", str(ckpt), "--eps", "8/255", "--epochs", "1", "--max-iter", "1", "--batch-size",
            "8", "-q", "--out", str(tmp_path / "t.pt")]
    code, text, err = run(base + ["--dataset", f"npz:{few}"], capsys)
    assert code == 0, err
    assert "No held-out split: the default one is 10% of the training images, and 8 image(s) give none" in text
    assert "--val-split 0)" not in text
    code, text, err = run(base + ["--dataset", f"npz:{few}", "--val-split", "0.05"], capsys)
    assert code == 0, err
    assert "No held-out split: --val-split 0.05 of 8 training image(s) rounds down to none" in text
    code, text, err = run(base + ["--dataset", f"npz:{npz}", "--val-split", "0"], capsys)
    assert code == 0, err
    assert "No held-out split (--val-split 0)" in text


# -- errors --------------------------------------------------------------------------------------------


def test_user_errors_are_one_line(npz_and_checkpoint, tmp_path, capsys):
    npz, ckpt = npz_and_checkpoint
    base = ["--eps", "0.1", "--max-iter", "1", "-q"]
    cases = [
        (["evaluate", "--model", "no-such-model", "--dataset", "digits"], ["unknown model", "no-such-model"]),
        (["evaluate", "--model", str(ckpt), "--dataset", f"npz:{tmp_path / 'missing.npz'}"], ["missing.npz"]),
        (["evaluate", "--model", str(ckpt), "--dataset", "mnist"], ["unknown dataset"]),
        (["evaluate", "--model", str(tmp_path / "rgb.pt"), "--dataset", f"npz:{npz}"], ["shape", "(3, 8, 8)"]),
        (["evaluate", "--model", str(ckpt), "--dataset", "digits"], ["label", "3 classes"]),
        (["evaluate", "--model", str(ckpt), "--dataset", f"npz:{npz}", "--attacks", "fgsm"], ["unknown attack"]),
        (["evaluate", "--model", str(ckpt), "--dataset", "cifar10", "--data-dir", str(tmp_path)], ["cifar10"]),
        (["finetune", "--model", str(ckpt), "--dataset", f"npz:{tmp_path / 'test_only.npz'}", "--out",
          str(tmp_path / "x.pt")], ["x_train"]),
    ]
    for argv, fragments in cases:
        code, _, err = run(argv + base, capsys)
        assert_one_line_error(code, err, *fragments)
    for argv, fragment in ((["evaluate", "--model", str(ckpt), "--dataset", "digits", "--eps", "1/zero"], "--eps"),
                           (["evaluate", "--dataset", "digits"], "--model"),
                           (["evaluate", "--model", str(ckpt), "--dataset", "digits", "--norm", "3"], "--norm"),
                           (["frobnicate"], "frobnicate")):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, fragment)


def test_debug_reraises(capsys):
    with pytest.raises(FileNotFoundError):
        cli.main(["evaluate", "--model", "no-such-model", "--dataset", "digits", "--debug"])


def test_unknown_robustbench_model(tmp_path, capsys):
    npz = tmp_path / "cifar_like.npz"
    np.savez(npz, x_test=np.zeros((2, 3, 32, 32), np.uint8), y_test=np.zeros(2, int))
    code, _, err = run(["evaluate", "--model", "rb:NoSuchModel2024", "--dataset", f"npz:{npz}", "--model-dir",
                        str(tmp_path / "models"), "-q"], capsys)
    assert_one_line_error(code, err, "unknown RobustBench model", "NoSuchModel2024")
