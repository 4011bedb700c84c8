//! The `trifecta` binary end to end: run folders, exact resume, downloads from a local mirror,
//! and every bad input of the product issue, each ending in a one-line error that names the
//! file and the problem, a non-zero exit, and nothing already written touched.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary run with `args` (`&str`s or `String`s).
fn trifecta<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    trifecta_with(args, &[])
}

/// `trifecta` with environment variables set (the loader's thread count, say).
fn trifecta_with<S: AsRef<std::ffi::OsStr>>(args: &[S], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trifecta"))
        .args(args)
        .env_remove("TRIFECTA_DATA")
        .env_remove("TRIFECTA_MIRROR")
        .env_remove("TRIFECTA_LOADER_THREADS")
        .envs(vars.iter().copied())
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failure with exactly one line on stderr that contains every `needle`.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "'{needle}' missing from: {err}");
    }
}

/// A quick run on the built-in sample: 600 training and 100 test images at width 0.125.
fn quick_args(out: &Path, epochs: u64) -> Vec<String> {
    [
        "train",
        "--width",
        "0.125",
        "--batch-size",
        "100",
        "--train-limit",
        "600",
        "--test-limit",
        "100",
        "--threads",
        "2",
        "--seed",
        "7",
        "--epochs",
        &epochs.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_quick(out: &Path, epochs: u64) -> Output {
    let args = quick_args(out, epochs);
    trifecta(&args)
}

/// `trifecta report RUN... --out OUT`, which must succeed; the report's text.
fn report_md(runs: &[&Path], out: &Path) -> String {
    let mut args: Vec<&str> = vec!["report"];
    args.extend(runs.iter().map(|r| r.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    let done = trifecta(&args);
    assert!(done.status.success(), "{}", stderr(&done));
    std::fs::read_to_string(out.join("report.md")).unwrap()
}

/// A run's metrics records without their timings, which differ between processes where
/// nothing else may.
fn untimed_records(dir: &Path) -> Vec<serde_json::Value> {
    trifecta::run::metrics::read(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.train_seconds = 0.0;
            r.eval_seconds = 0.0;
            r.data_wait_seconds = 0.0;
            r.samples_per_second = 0.0;
            serde_json::to_value(r).unwrap()
        })
        .collect()
}

fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn a_run_writes_config_metrics_and_checkpoint() {
    let tmp = TempDir::new("run");
    let run = tmp.path().join("run");
    let out = run_quick(&run, 1);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("layer 5:") && stdout.contains("test accuracy"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("`trifecta eval {}`", run.display())),
        "the run's last line names its folder and what reads it: {stdout}"
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("dataset = \"mnist-sample\"") && config.contains("width = 0.125"),
        "{config}"
    );
    let records = trifecta::run::metrics::read(&run.join("metrics.jsonl")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].layers.len(), 6);
    assert!(records[0].samples_per_second > 0.0 && records[0].ensemble_accuracy > Some(0.0));
    let header =
        trifecta::run::checkpoint::read_header(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!((header.epoch, header.iteration), (1, 6));
    assert!(run.join("checkpoint.json").exists());
    // PyTorch names and layouts: the conv weight of block 0 is (out, in, 3, 3).
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        file.tensor("block0.conv.weight").unwrap().shape(),
        &[16, 2, 3, 3]
    );

    let eval = trifecta(&["eval", run.to_str().unwrap()]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let text = String::from_utf8_lossy(&eval.stdout);
    let expected = format!(
        "accuracy {:.2}%",
        100.0 * records[0].ensemble_accuracy.unwrap()
    );
    assert!(
        text.contains(&expected),
        "eval must reproduce the run's accuracy ({expected}): {text}"
    );
    // Every image is scored on its own (BatchNorm in eval mode): batches of 7, the last of
    // 2, give every layer's accuracy as before.
    let batched = trifecta(&["eval", run.to_str().unwrap(), "--eval-batch-size", "7"]);
    assert!(batched.status.success(), "{}", stderr(&batched));
    assert_eq!(String::from_utf8_lossy(&batched.stdout), text);
}

/// `--val-split`: images held out of the training split before `--train-limit`, evaluated
/// beside the test set at every evaluation, in the metrics, in `eval` and in the report; the
/// split is part of the run (a resume cannot change it), and one that leaves nothing to train
/// on is a one-line error before any folder is made.
#[test]
fn a_validation_split_is_held_out_and_evaluated() {
    let tmp = TempDir::new("val");
    let run = tmp.path().join("run");
    let mut args = quick_args(&run, 2);
    args.extend(["--val-split".to_string(), "200".to_string()]);
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("600 train / 200 val / 100 test images"),
        "{stdout}"
    );
    assert!(stdout.contains("val accuracy"), "{stdout}");
    let records = trifecta::run::metrics::read(&run.join("metrics.jsonl")).unwrap();
    let last = records.last().unwrap();
    assert!(
        records.iter().all(|e| e.ensemble_val_accuracy.is_some()
            && e.layers.iter().all(|l| l.val_accuracy.is_some()))
    );
    let eval = trifecta(&["eval", run.to_str().unwrap()]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let expected = format!(
        "accuracy val {:.2}%, test {:.2}%",
        100.0 * last.ensemble_val_accuracy.unwrap(),
        100.0 * last.ensemble_accuracy.unwrap()
    );
    let text = String::from_utf8_lossy(&eval.stdout);
    assert!(text.contains(&expected), "{expected}: {text}");

    let report = tmp.path().join("report");
    let md = report_md(&[&run], &report);
    assert!(md.contains("## Chosen on the validation split"), "{md}");
    assert!(report.join("val-accuracy-run.png").exists());
    let csv = std::fs::read_to_string(report.join("metrics.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().contains(",val_accuracy,"),
        "{csv}"
    );

    let resumed = trifecta(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "3",
        "--val-split",
        "100",
    ]);
    assert_one_line_error(&resumed, &["val_split 200 -> 100"]);

    // best.safetensors: the first epoch whose best layer did best on validation, and `eval`
    // of it gives that epoch's accuracies.
    let best = |e: &trifecta::run::metrics::EpochRecord| {
        let val = e.layers.iter().filter_map(|l| l.val_accuracy);
        val.fold(f64::MIN, f64::max)
    };
    let chosen = records
        .iter()
        .reduce(|a, b| if best(b) > best(a) { b } else { a })
        .unwrap();
    let best_file = run.join("best.safetensors");
    let header = trifecta::run::checkpoint::read_header(&best_file).unwrap();
    assert_eq!(header.epoch, chosen.epoch);
    let eval = trifecta(&["eval", best_file.to_str().unwrap()]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let text = String::from_utf8_lossy(&eval.stdout);
    for l in &chosen.layers {
        let line = format!(
            "layer {}: val {:.2}%, test {:.2}%",
            l.layer,
            100.0 * l.val_accuracy.unwrap(),
            100.0 * l.test_accuracy.unwrap()
        );
        assert!(text.contains(&line), "{line}: {text}");
    }
    // --on-train: the 600 images it trained on as well, the other splits' figures unchanged.
    let with_train = trifecta(&["eval", run.to_str().unwrap(), "--on-train"]);
    assert!(with_train.status.success(), "{}", stderr(&with_train));
    let text = String::from_utf8_lossy(&with_train.stdout);
    let ensemble = text.lines().next().unwrap();
    assert!(
        ensemble.contains("(600 train / 200 val / 100 test images)")
            && ensemble.contains("accuracy train ")
            && ensemble.ends_with(&expected.replace("accuracy val", ", val")),
        "{ensemble}"
    );
    // The split is the run's: another size or seed would take training images.
    for change in [["--val-split", "300"], ["--seed", "8"]] {
        let out = trifecta(&["eval", run.to_str().unwrap(), change[0], change[1]]);
        assert_one_line_error(&out, &["eval cannot change --val-split"]);
    }
    // A resumed run knows the best so far from the metrics: with epoch 1 made unbeatable
    // there, epoch 3 does not replace the best checkpoint.
    let metrics = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut record: trifecta::run::metrics::EpochRecord = serde_json::from_str(first).unwrap();
    record.layers[0].val_accuracy = Some(1.0);
    let edited = serde_json::to_string(&record).unwrap() + "\n" + rest;
    std::fs::write(&metrics, edited).unwrap();
    let before = std::fs::read(&best_file).unwrap();
    let resumed = trifecta(&["train", "--resume", run.to_str().unwrap(), "--epochs", "3"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(std::fs::read(&best_file).unwrap() == before);
    let header = trifecta::run::checkpoint::read_header(&run.join("checkpoint.safetensors"));
    assert_eq!(header.unwrap().epoch, 3);

    // The baselines hold out and evaluate the same split.
    let lcp = tmp.path().join("lcp");
    let mut args = quick_args(&lcp, 1);
    args.extend(["--model", "lcp", "--val-split", "200"].map(String::from));
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = trifecta::run::metrics::read(&lcp.join("metrics.jsonl")).unwrap();
    assert!(records[0].layers.iter().all(|l| l.val_accuracy.is_some()));

    // Without a split the metrics carry no validation fields, as before it existed.
    let plain = tmp.path().join("plain");
    let out = run_quick(&plain, 1);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = std::fs::read_to_string(plain.join("metrics.jsonl")).unwrap();
    assert!(!line.contains("val_accuracy"), "{line}");

    let all = tmp.path().join("all");
    let mut args = quick_args(&all, 1);
    args.extend(["--val-split", "4000"].map(String::from));
    let out = trifecta(&args);
    assert_one_line_error(&out, &["val_split 4000", "has 4000"]);
    assert!(!all.exists(), "no folder for a run that cannot start");
}

/// A run that diverges (NaN losses, which JSON writes as null) says so, and its folder still
/// reports and resumes: its log and progress read null back as NaN.
#[test]
fn a_diverged_run_says_so_and_still_reports_and_resumes() {
    let tmp = TempDir::new("nan");
    let run = tmp.path().join("run");
    let mut args = quick_args(&run, 1);
    args.extend(["--lr", "1e30", "--max-steps", "3"].map(String::from));
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // Stopped within epoch 1: its progress holds NaN sums.
    let progress = std::fs::read_to_string(run.join("progress.json")).unwrap();
    assert!(progress.contains("null"), "{progress}");
    let out = trifecta(&["train", "--resume", run.to_str().unwrap(), "--epochs", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the run has diverged"), "{stdout}");
    let records = trifecta::run::metrics::read(&run.join("metrics.jsonl")).unwrap();
    assert!(records[0].layers.iter().any(|l| l.loss.is_nan()));
    let md = report_md(&[&run], &tmp.path().join("report"));
    assert!(md.contains("| run |"), "{md}");
}

/// `--patience N` with a validation split: the run stops once N evaluations in a row bring no
/// better validation accuracy (a high learning rate makes it wander here), keeping the best
/// epoch in best.safetensors; a resume of it trains nothing, one with more patience goes on;
/// the report says it stopped early. Without a split it is an error.
#[test]
fn patience_stops_a_run_early_on_its_validation_split() {
    let tmp = TempDir::new("patience");
    let run = tmp.path().join("run");
    let mut args = quick_args(&run, 30);
    args.extend(["--val-split", "200", "--patience", "2", "--lr", "0.3"].map(String::from));
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopping early (--patience 2)"), "{stdout}");
    let records = trifecta::run::metrics::read(&run.join("metrics.jsonl")).unwrap();
    assert!(records.len() < 30);
    let (since, best) = trifecta::run::metrics::since_best_val(&records).unwrap();
    assert_eq!(since, 2);
    let header = trifecta::run::checkpoint::read_header(&run.join("best.safetensors")).unwrap();
    assert_eq!(header.epoch, best.epoch);

    let again = trifecta(&["train", "--resume", run.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("stopped early already"));
    let report = tmp.path().join("report");
    let md = report_md(&[&run], &report);
    assert!(md.contains("of 30 epochs (stopped early"), "{md}");
    let more = trifecta(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--patience",
        "100",
        "--epochs",
        &(records.len() + 1).to_string(),
    ]);
    assert!(more.status.success(), "{}", stderr(&more));
    let after = trifecta::run::metrics::read(&run.join("metrics.jsonl")).unwrap();
    assert_eq!(after.len(), records.len() + 1);

    // A baseline stops the same way (it keeps its last weights, no best checkpoint).
    let lcp = tmp.path().join("lcp");
    let mut args = quick_args(&lcp, 30);
    args.extend(
        [
            "--model",
            "lcp",
            "--val-split",
            "200",
            "--patience",
            "1",
            "--lr",
            "0.3",
        ]
        .map(String::from),
    );
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopping early (--patience 1)"));
    let records = trifecta::run::metrics::read(&lcp.join("metrics.jsonl")).unwrap();
    assert_eq!(
        trifecta::run::metrics::since_best_val(&records).unwrap().0,
        1
    );

    let plain = tmp.path().join("plain");
    let mut args = quick_args(&plain, 2);
    args.extend(["--patience", "2"].map(String::from));
    let out = trifecta(&args);
    assert_one_line_error(&out, &["needs a validation split"]);
}

/// `--max-steps` stops a run inside an epoch (here after step 3 of epoch 2's 6) and saves
/// where it stopped; `--resume` goes on from that step and ends as the run that never
/// stopped, bit for bit: weights, statistics, Adam, and epoch 2's record (its means over
/// steps from both processes). The progress file goes once its epoch is checkpointed. Saving
/// after every step (`--save-every-minutes`, the same save) changes nothing either.
#[test]
fn a_run_stopped_within_an_epoch_resumes_bit_for_bit() {
    let tmp = TempDir::new("steps");
    let whole = tmp.path().join("whole");
    assert!(run_quick(&whole, 2).status.success());
    let same_as_whole = |run: &PathBuf| {
        assert_eq!(
            tensors(&whole.join("checkpoint.safetensors")),
            tensors(&run.join("checkpoint.safetensors")),
            "{}",
            run.display()
        );
        assert_eq!(
            untimed_records(&whole),
            untimed_records(run),
            "{}",
            run.display()
        );
        assert!(!run.join("progress.safetensors").exists());
        assert!(!run.join("progress.json").exists());
    };

    let run = tmp.path().join("stopped");
    let mut args = quick_args(&run, 2);
    args.extend(["--max-steps", "9"].map(String::from));
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stopped after step 3 of 6 of epoch 2"),
        "{stdout}"
    );
    assert!(run.join("progress.safetensors").exists());
    assert_eq!(untimed_records(&run).len(), 1, "epoch 2 is not over");
    let md = report_md(&[&run], &tmp.path().join("report"));
    assert!(md.contains("epoch 2 under way, 3 steps done"), "{md}");
    let out = trifecta(&["train", "--resume", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("resuming epoch 2 after its step 3"),
        "{stdout}"
    );
    same_as_whole(&run);
    // A limit the run has reached already trains nothing.
    let out = trifecta(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--max-steps",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));

    let saved = tmp.path().join("saved");
    let mut args = quick_args(&saved, 2);
    args.extend(["--save-every-minutes", "1e-9"].map(String::from));
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    same_as_whole(&saved);

    for value in ["-1", "nan", "1e300"] {
        let bad = trifecta(&["train", &format!("--save-every-minutes={value}")]);
        assert_one_line_error(&bad, &["--save-every-minutes"]);
    }
}

/// Ctrl-C while training: the run saves where it is (a step, or an evaluation, or between
/// epochs, wherever the signal lands) and exits with 130, saying how to go on; the resumed
/// run ends as one that never stopped, bit for bit.
#[cfg(unix)]
#[test]
fn ctrl_c_saves_the_run_and_resume_goes_on_bit_for_bit() {
    use std::io::BufRead;
    let tmp = TempDir::new("sigint");
    let whole = tmp.path().join("whole");
    assert!(run_quick(&whole, 4).status.success());
    let run = tmp.path().join("run");
    let args = quick_args(&run, 30);
    let mut child = Command::new(env!("CARGO_BIN_EXE_trifecta"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("epoch 2/30 step");
        seen.push(line);
        if started {
            break;
        }
    }
    // SAFETY: kill takes the child's pid and a signal number, no pointers.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:?} {rest:?}");
    let last = rest.last().unwrap();
    assert!(
        last.starts_with("error: interrupted") && last.contains("--resume"),
        "{rest:?}"
    );
    let out = trifecta(&["train", "--resume", run.to_str().unwrap(), "--epochs", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tensors(&whole.join("checkpoint.safetensors")),
        tensors(&run.join("checkpoint.safetensors"))
    );
    assert_eq!(untimed_records(&whole), untimed_records(&run));
}

#[test]
fn resume_matches_an_uninterrupted_run_bit_for_bit() {
    // The resumed part also evaluates only every third epoch and the last (so epoch 3, not
    // 2): evaluation must leave training untouched.
    let tmp = TempDir::new("resume");
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    assert!(run_quick(&whole, 3).status.success());
    assert!(run_quick(&split, 1).status.success());
    // The run was stopped while writing epoch 2's record (not checkpointed yet): the torn line
    // is left out, and the resume trains epoch 2 again. A bad complete line stays an error.
    let metrics = split.join("metrics.jsonl");
    let records = std::fs::read(&metrics).unwrap();
    std::fs::write(&metrics, [&records[..], b"{\"epoch\":2,\"lay"].concat()).unwrap();
    assert_eq!(trifecta::run::metrics::read(&metrics).unwrap().len(), 1);
    std::fs::write(&metrics, [&records[..], b"{\"epoch\":2,\"lay\n"].concat()).unwrap();
    let err = trifecta::run::metrics::read(&metrics)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("line 2"),
        "{err}"
    );
    std::fs::write(&metrics, [&records[..], b"{\"epoch\":2,\"lay"].concat()).unwrap();
    // The resumed epochs' batches are prepared on another number of threads (the default is
    // half the cores): the same batches all the same.
    let out = trifecta_with(
        &[
            "train",
            "--resume",
            split.to_str().unwrap(),
            "--epochs",
            "3",
            "--eval-every",
            "3",
        ],
        &[("TRIFECTA_LOADER_THREADS", "3")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resuming after epoch 1"), "{stdout}");
    assert!(
        stdout.contains("epoch 2/3") && stdout.contains("not evaluated"),
        "{stdout}"
    );
    assert_eq!(
        tensors(&whole.join("checkpoint.safetensors")),
        tensors(&split.join("checkpoint.safetensors")),
        "weights, running statistics and Adam moments must be identical"
    );
    // The separation histograms' goodness comes from the last evaluation, so it is too.
    assert_eq!(
        tensors(&whole.join("goodness.safetensors")),
        tensors(&split.join("goodness.safetensors"))
    );
    let accuracies = |dir: &PathBuf| -> Vec<Option<f64>> {
        let records = trifecta::run::metrics::read(&dir.join("metrics.jsonl")).unwrap();
        records.iter().map(|r| r.ensemble_accuracy).collect()
    };
    let (every, second) = (accuracies(&whole), accuracies(&split));
    assert!(every.iter().all(Option::is_some), "{every:?}");
    assert_eq!(second, [every[0], None, every[2]]);
    let changed = trifecta(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--width",
        "0.5",
    ]);
    assert_one_line_error(
        &changed,
        &["resumed run keeps its configuration", "width 0.125 -> 0.5"],
    );
    // Fewer epochs than it has trained would leave a config that disowns its records.
    let config = std::fs::read(split.join("config.toml")).unwrap();
    let shorter = trifecta(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert_one_line_error(&shorter, &["has trained 3 epochs already", "--epochs 2"]);
    assert_eq!(std::fs::read(split.join("config.toml")).unwrap(), config);
    // A finished run resumed as it is says so and trains nothing.
    let weights = std::fs::read(split.join("checkpoint.safetensors")).unwrap();
    let again = trifecta(&["train", "--resume", split.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("has trained epoch 3 of 3: nothing to do"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(split.join("checkpoint.safetensors")).unwrap(),
        weights
    );

    // A run from another machine (a GPU's, a many-core's) reads and reports here, and
    // resumes with the knobs this machine needs; without them it says which.
    let text = String::from_utf8(config).unwrap();
    let foreign = text
        .replace("device = \"cpu\"", "device = \"cuda\"")
        .replace("threads = 2", "threads = 100000");
    assert_ne!(foreign, text);
    std::fs::write(split.join("config.toml"), &foreign).unwrap();
    report_md(&[&split], &tmp.path().join("report"));
    let resume = [
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--epochs",
        "4",
    ];
    assert_one_line_error(&trifecta(&resume), &["threads 100000"]);
    let here = trifecta(&[&resume[..], &["--threads", "2", "--device", "cpu"]].concat());
    assert!(here.status.success(), "{}", stderr(&here));
    assert!(String::from_utf8_lossy(&here.stdout).contains("epoch 4/4"));
}

#[test]
fn data_download_from_a_mirror_verifies_the_real_files() {
    let shared = shared_dir().join("datasets/mnist");
    let routes = trifecta::data::download::remotes(trifecta::data::DatasetKind::Mnist)
        .iter()
        .map(|r| {
            (
                format!("/{}", r.file),
                None,
                std::fs::read(shared.join(r.file)).unwrap(),
            )
        })
        .collect();
    let base = serve(routes, 4);
    let tmp = TempDir::new("mirror");
    let out = Command::new(env!("CARGO_BIN_EXE_trifecta"))
        .args([
            "data",
            "download",
            "--dataset",
            "mnist",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ])
        .env("TRIFECTA_MIRROR", &base)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("ok"))
            .count(),
        4
    );
    // Then both splits load as training reads them.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("train: 60000 images, 1x28x28")
            && stdout.contains("test: 10000 images, 1x28x28"),
        "{stdout}"
    );
    // MNIST checked as Fashion-MNIST names the mix-up, not only a checksum.
    let twin = trifecta(&[
        "data",
        "verify",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&twin, &["this is mnist's file, not fashion-mnist's"]);
    // Checked as another format, it names the one it holds and its flag.
    let other = trifecta(&[
        "data",
        "verify",
        "--dataset",
        "svhn",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_one_line_error(
        &other,
        &["holds mnist's files, not svhn's: --dataset mnist"],
    );

    // A corrupted file on disk fails verification with its name.
    let victim = tmp.path().join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 12;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let out = trifecta(&[
        "data",
        "verify",
        "--dataset",
        "mnist",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["t10k-labels-idx1-ubyte.gz"]);
}

/// Copies the real MNIST test files into a fresh folder, then lets `damage` spoil one.
fn mnist_copy(tag: &str) -> TempDir {
    let tmp = TempDir::new(tag);
    let src = shared_dir().join("datasets/mnist");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    tmp
}

fn train_on(kind: &str, dir: &Path, out: &Path) -> Output {
    trifecta(&[
        "train",
        "--dataset",
        kind,
        "--data-dir",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--width",
        "0.125",
        "--epochs",
        "1",
        "--train-limit",
        "64",
    ])
}

#[test]
fn bad_idx_files() {
    let tmp = mnist_copy("idx-bad");
    let file = tmp.path().join("t10k-images-idx3-ubyte.gz");
    let raw = trifecta::data::idx::read_maybe_gz(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let plain = tmp.path().join("t10k-images-idx3-ubyte");
    std::fs::write(&plain, &raw[..raw.len() / 2]).unwrap();
    let out = train_on("mnist", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(&out, &["t10k-images-idx3-ubyte", "truncated"]);
    assert!(
        !tmp.path().join("run").exists(),
        "no run folder for a run that never started"
    );

    let mut wrong = raw.clone();
    wrong[2] = 0x0b;
    std::fs::write(&plain, &wrong).unwrap();
    let out = train_on("mnist", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(&out, &["t10k-images-idx3-ubyte", "magic"]);
}

#[test]
fn bad_label_in_idx() {
    let tmp = mnist_copy("idx-label");
    let file = tmp.path().join("train-labels-idx1-ubyte.gz");
    let mut raw = trifecta::data::idx::read_maybe_gz(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    raw[8 + 5] = 12;
    std::fs::write(tmp.path().join("train-labels-idx1-ubyte"), &raw).unwrap();
    let out = train_on("mnist", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(
        &out,
        &[
            "train-labels-idx1-ubyte",
            "label 12 at index 5 is out of range",
        ],
    );
}

#[test]
fn bad_cifar_record_file() {
    let tmp = TempDir::new("cifar-cli");
    let batches = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&batches).unwrap();
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        std::fs::write(batches.join(name), vec![1u8; 3073]).unwrap();
    }
    std::fs::write(batches.join("data_batch_3.bin"), vec![1u8; 3073 + 7]).unwrap();
    let out = train_on("cifar10", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(&out, &["data_batch_3.bin", "3073"]);
}

#[test]
fn mat_file_without_x_or_y() {
    let tmp = TempDir::new("mat-cli");
    write_mat(
        &tmp.path().join("train_32x32.mat"),
        &[("y", vec![1, 1], 6, 1.0f64.to_le_bytes().to_vec())],
    );
    let out = train_on("svhn", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(&out, &["train_32x32.mat", "no variable X"]);
    write_mat(
        &tmp.path().join("train_32x32.mat"),
        &[("X", vec![2, 2, 3, 1], 9, vec![0u8; 12])],
    );
    let out = train_on("svhn", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(&out, &["train_32x32.mat", "no variable y"]);
}

#[test]
fn image_of_the_wrong_size() {
    let tmp = TempDir::new("folder-cli");
    for (split, class, name, w) in [
        ("train", "a", "1.png", 8),
        ("train", "b", "2.png", 8),
        ("test", "a", "3.png", 8),
        ("test", "b", "4.png", 9),
    ] {
        let path = tmp.path().join(split).join(class).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::new(w, 8).save(&path).unwrap();
    }
    let out = train_on("folder", tmp.path(), &tmp.path().join("run"));
    assert_one_line_error(&out, &["4.png", "9x8", "expected 8x8"]);
    // `data verify` finds the same before any run, and says what a good folder holds.
    let dir = tmp.path().to_str().unwrap();
    let verify = ["data", "verify", "--dataset", "folder", "--data-dir", dir];
    assert_one_line_error(&trifecta(&verify), &["4.png", "9x8"]);
    image::GrayImage::new(8, 8)
        .save(tmp.path().join("test/b/4.png"))
        .unwrap();
    let out = trifecta(&verify);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("train: 2 images, 1x8x8 (channels x height x width), 2 classes, 1 each"),
        "{stdout}"
    );
    assert!(stdout.contains("classes, by label: a, b"), "{stdout}");
}

#[test]
fn bad_flag_values_and_config_keys() {
    let out = trifecta(&["train", "--width", "-1"]);
    assert_one_line_error(&out, &["--width", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    // clap's lists and tips under its first line stay in the one line.
    let out = trifecta(&["eval"]);
    assert_one_line_error(&out, &["required arguments", "<CHECKPOINT>"]);
    let out = trifecta(&["train", "--epoch", "3"]);
    assert_one_line_error(
        &out,
        &["'--epoch'", "tip: a similar argument exists: '--epochs'"],
    );
    let out = trifecta(&["train", "--lr-schedule", "200:fast"]);
    assert_one_line_error(&out, &["--lr-schedule", "200:fast"]);
    let out = trifecta(&["train", "--device", "tpu"]);
    assert_one_line_error(&out, &["tpu"]);
    let out = trifecta(&["train", "--precision", "bf16"]);
    assert_one_line_error(&out, &["bf16", "--device cuda"]);
    // Without the cuda feature the build says so; with it, a machine without a GPU says
    // what is missing. Either way: one line, naming the device.
    let out = trifecta(&["bench", "--device", "cuda:1"]);
    assert_one_line_error(&out, &["cuda:1"]);
    for switch in ["--unfused", "--cudnn-benchmark"] {
        let out = trifecta(&["bench", switch]);
        assert_one_line_error(&out, &[switch, "--device cuda"]);
    }
    let out = trifecta(&["bench", "--compare-unshared-eval"]);
    assert_one_line_error(&out, &["--compare-unshared-eval", "--epoch-images"]);
    for bad in ["0", "many", "100000"] {
        let out = trifecta_with(&["train"], &[("TRIFECTA_LOADER_THREADS", bad)]);
        assert_one_line_error(&out, &["TRIFECTA_LOADER_THREADS", bad]);
    }
    // Thread counts far past the cores (which made a run crawl, or never start) are refused.
    for command in ["train", "bench"] {
        let out = trifecta(&[command, "--threads", "100000"]);
        assert_one_line_error(&out, &["threads 100000", "at most"]);
    }

    let tmp = TempDir::new("config");
    let config = tmp.path().join("run.toml");
    std::fs::write(&config, "dataset = \"mnist-sample\"\nwidht = 0.5\n").unwrap();
    let out = trifecta(&["train", "--config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["run.toml", "widht"]);
    std::fs::write(&config, "width = \"wide\"\n").unwrap();
    let out = trifecta(&["train", "--config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["run.toml", "width"]);
    std::fs::write(&config, "width = -2.0\n").unwrap();
    let out = trifecta(&["train", "--config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["width must be a positive number", "run.toml"]);
    std::fs::write(&config, "threads = 100000\n").unwrap();
    let out = trifecta(&["train", "--config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["threads 100000", "run.toml"]);
    // Refused before the run folder is made.
    let never = tmp.path().join("never");
    let out = trifecta(&[
        "train",
        "--ensemble",
        "4,6",
        "--out",
        never.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["ensemble layer 6", "small has 6 layers"]);
    assert!(!never.exists());
    let out = trifecta(&[
        "train",
        "--ensemble",
        "4,5,5",
        "--out",
        never.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["layer 5 twice"]);
    assert!(!never.exists());
    // A grid checks all its data folders before its first run: no hours of MNIST and
    // Fashion-MNIST before it finds SVHN missing.
    let root = tmp.path().join("data-root");
    for present in ["mnist", "fashion-mnist"] {
        std::fs::create_dir_all(root.join(present)).unwrap();
    }
    let grid = tmp.path().join("grid");
    let out = trifecta(&[
        "reproduce",
        "datasets",
        "--data-dir",
        root.to_str().unwrap(),
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["svhn", "no such folder"]);
    assert!(!grid.exists());
    let out = trifecta(&["reproduce", "lcp", "--seeds", "1,2,1"]);
    assert_one_line_error(&out, &["--seeds", "seed 1 twice"]);
    let out = trifecta(&["reproduce", "datasets", "--only", "ff-mnist,bp-cifar"]);
    assert_one_line_error(&out, &["no variant bp-cifar", "bp-cifar10"]);
    let absent = tmp.path().join("absent");
    let out = trifecta(&[
        "train",
        "--dataset",
        "svhn",
        "--data-dir",
        absent.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &out,
        &["absent", "no such folder", "data download --dataset svhn"],
    );
    // A network far beyond the machine's memory is refused before it is allocated (the
    // allocations would succeed lazily and the kernel kill the run mid-step).
    if cfg!(target_os = "linux") {
        let out = trifecta(&["train", "--width", "1000", "--out", never.to_str().unwrap()]);
        assert_one_line_error(&out, &["GiB", "available", "--width"]);
        assert!(!never.exists());
        let out = trifecta(&["bench", "--width", "1000"]);
        assert_one_line_error(&out, &["GiB", "available", "--width"]);
    }
}

#[test]
fn checkpoint_of_another_architecture() {
    let tmp = TempDir::new("arch");
    let run = tmp.path().join("run");
    assert!(run_quick(&run, 1).status.success());
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let out = trifecta(&["eval", run.to_str().unwrap(), "--width", "0.25"]);
    assert_one_line_error(&out, &["checkpoint.safetensors", "different architecture"]);
    let out = trifecta(&["eval", run.to_str().unwrap(), "--arch", "large"]);
    assert_one_line_error(&out, &["checkpoint.safetensors", "different architecture"]);
    // eval reads a --config file as train does (it once ignored it); --resume is train's.
    let config = tmp.path().join("large.toml");
    std::fs::write(&config, "arch = \"large\"\n").unwrap();
    let out = trifecta(&[
        "eval",
        run.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["checkpoint.safetensors", "different architecture"]);
    let out = trifecta(&[
        "eval",
        run.to_str().unwrap(),
        "--resume",
        run.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["unexpected argument '--resume'"]);
    // A file of the run folder that is not its checkpoint says what to pass.
    let out = trifecta(&["eval", run.join("config.toml").to_str().unwrap()]);
    assert_one_line_error(
        &out,
        &[
            "config.toml: not a checkpoint",
            "pass a run folder or the .safetensors file",
        ],
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint.safetensors")).unwrap(),
        before
    );
}

#[test]
fn unusable_output_folders_and_existing_runs() {
    let tmp = TempDir::new("out");
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"keep me").unwrap();
    let out = run_quick(&blocker.join("run"), 1);
    assert_one_line_error(&out, &["a-file"]);
    assert_eq!(std::fs::read(&blocker).unwrap(), b"keep me");
    let out = run_quick(&blocker, 1);
    assert_one_line_error(&out, &["a-file", "names a file, not a folder"]);
    assert_eq!(std::fs::read(&blocker).unwrap(), b"keep me");
    for (resumed, says) in [
        (&blocker, "not a run folder: a file"),
        (&tmp.path().join("nowhere"), "no such run folder"),
        (
            &tmp.path().to_path_buf(),
            "not a run folder: it has no config.toml",
        ),
    ] {
        let out = trifecta(&["train", "--resume", resumed.to_str().unwrap()]);
        assert_one_line_error(&out, &[says]);
    }

    let run = tmp.path().join("run");
    assert!(run_quick(&run, 1).status.success());
    let before: Vec<Vec<u8>> = ["config.toml", "metrics.jsonl", "checkpoint.safetensors"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    let out = run_quick(&run, 1);
    assert_one_line_error(&out, &["already holds a run", "--resume"]);
    let after: Vec<Vec<u8>> = ["config.toml", "metrics.jsonl", "checkpoint.safetensors"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "an existing run is never overwritten");
}

#[test]
fn reproduce_and_report_write_tables_and_figures() {
    let tmp = TempDir::new("reproduce");
    let out = tmp.path().join("lcp");
    let args = [
        "reproduce",
        "lcp",
        "--dataset",
        "mnist-sample",
        "--width",
        "0.125",
        "--batch-size",
        "100",
        "--train-limit",
        "300",
        "--test-limit",
        "100",
        "--epochs",
        "2",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = trifecta(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        table.contains("| ff |") && table.contains("| lcp |") && table.contains("layer 5"),
        "{table}"
    );
    // A second call reuses the finished runs.
    let again = trifecta(&args);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already finished"));
    // Fewer epochs than the runs have: their first epoch stands for a 1-epoch grid.
    let mut shorter = args;
    shorter[13] = "1";
    let first = trifecta(&shorter);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("finished 2 epochs, reusing its first 1")
    );
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("| ff | mnist-sample | 1 |"), "{table}");
    // Another width in the same folder is not served the old width's results.
    // With --seeds: a run per variant and seed, the table's cells over the seeds.
    let seeds_out = tmp.path().join("seeds");
    let mut seeded = args.to_vec();
    *seeded.last_mut().unwrap() = seeds_out.to_str().unwrap();
    seeded.extend(["--seeds", "1,2"]);
    let run = trifecta(&seeded);
    assert!(run.status.success(), "{}", stderr(&run));
    let table = std::fs::read_to_string(seeds_out.join("results.md")).unwrap();
    assert!(
        table.contains("% (2 seeds) |")
            && table.contains(" +- ")
            && seeds_out.join("lcp-seed2").is_dir(),
        "{table}"
    );
    let mut wider = args;
    wider[5] = "0.25";
    let other = trifecta(&wider);
    assert_one_line_error(
        &other,
        &["holds a run with other settings", "width 0.125 -> 0.25"],
    );

    let report = tmp.path().join("report");
    let md = report_md(&[&out.join("ff"), &out.join("lcp")], &report);
    for figure in [
        "layers",
        "accuracy-ff",
        "accuracy-lcp",
        "delta-ff",
        "goodness-ff",
    ] {
        assert!(
            md.contains(&format!("({figure}.png)")),
            "{figure} missing from the report"
        );
        for ext in ["png", "svg"] {
            let path = report.join(format!("{figure}.{ext}"));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(size > 1000, "{} is missing or empty", path.display());
        }
    }
    assert!(
        !md.contains("(delta-lcp.png)"),
        "the LCP baseline has no goodness, hence no delta figure"
    );
    // Both runs' 2 epochs x 6 layers in the long table, after its header.
    let csv = std::fs::read_to_string(report.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2 * 6, "{csv}");
    assert!(
        csv.contains("\nff,0,2,") && csv.contains("\nlcp,0,2,"),
        "{csv}"
    );
    let png = image::open(report.join("goodness-ff.png")).unwrap();
    assert!(png.width() >= 800);
    // A grid's folder stands for its runs. The first grid (seed 0) and the seeds' grid (1, 2)
    // are alike but for the seed: a row over the three seeds per variant.
    // A run that has not finished an epoch (a grid at work) is left out, not an error.
    let started = seeds_out.join("ff-seed3");
    std::fs::create_dir_all(&started).unwrap();
    std::fs::copy(
        seeds_out.join("ff-seed1/config.toml"),
        started.join("config.toml"),
    )
    .unwrap();
    let grid_report = tmp.path().join("grid-report");
    let grid_md = report_md(&[&out, &seeds_out], &grid_report);
    assert!(
        grid_md.contains("## ff\n") && grid_md.contains("## lcp-seed2\n"),
        "{grid_md}"
    );
    assert!(
        grid_md.contains("| lcp, lcp-seed1, lcp-seed2 | [0, 1, 2] |"),
        "{grid_md}"
    );

    // A baseline's run folder, or its weights file, evaluates as an FF run does: each head's
    // test accuracy at its layer, as its last epoch's record has them.
    let last = trifecta::run::metrics::read(&out.join("lcp/metrics.jsonl"))
        .unwrap()
        .pop()
        .unwrap();
    let weights = out.join("lcp").join("weights.safetensors");
    for named in [out.join("lcp"), weights.clone()] {
        let eval = trifecta(&["eval", named.to_str().unwrap(), "--per-class"]);
        assert!(eval.status.success(), "{}", stderr(&eval));
        let stdout = String::from_utf8_lossy(&eval.stdout);
        assert!(stdout.contains("lcp head on layer 5 accuracy"), "{stdout}");
        assert!(
            stdout.contains("per class (lcp head on layer 5, test)"),
            "{stdout}"
        );
        assert_eq!(last.layers.len(), 6);
        for record in &last.layers {
            let accuracy = 100.0 * record.test_accuracy.unwrap();
            let line = format!("  layer {}: {accuracy:.2}%\n", record.layer);
            assert!(stdout.contains(&line), "{line} not in {stdout}");
        }
    }

    // A run stopped before its last epoch says so.
    let partial = tmp.path().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    for file in ["metrics.jsonl", "config.toml"] {
        std::fs::copy(out.join("ff").join(file), partial.join(file)).unwrap();
    }
    let config = std::fs::read_to_string(partial.join("config.toml")).unwrap();
    std::fs::write(
        partial.join("config.toml"),
        config.replace("epochs = 2\n", "epochs = 5\n"),
    )
    .unwrap();
    let partial_report = tmp.path().join("partial-report");
    let md = report_md(&[&partial], &partial_report);
    assert!(md.contains("2 of 5 epochs (unfinished)"), "{md}");

    let missing = trifecta(&["report", tmp.path().join("nothing").to_str().unwrap()]);
    assert_one_line_error(&missing, &["nothing", "no such run folder"]);

    // Every folder of a grid is checked before its first run: ff-seed1, removed, is not
    // trained again when lcp-seed2, a later run, turns out to hold another width.
    std::fs::remove_dir_all(seeds_out.join("ff-seed1")).unwrap();
    let config = seeds_out.join("lcp-seed2/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("width = 0.125", "width = 0.25")).unwrap();
    let out = trifecta(&seeded);
    assert_one_line_error(&out, &["lcp-seed2", "width 0.25 -> 0.125"]);
    assert!(!seeds_out.join("ff-seed1").exists());
    // An unfinished baseline run is resumed as an FF one is: lcp-seed1 set back to its first
    // epoch (a 1-epoch run's weights, its log's first line) ends in the same table as
    // before (ff-seed1, removed above, is trained again).
    std::fs::write(&config, text).unwrap();
    let table = std::fs::read_to_string(seeds_out.join("results.md")).unwrap();
    let lcp1 = seeds_out.join("lcp-seed1");
    let one = tmp.path().join("lcp-seed1-one-epoch");
    let out = trifecta(&[
        "train",
        "--config",
        lcp1.join("config.toml").to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        one.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::copy(
        one.join("weights.safetensors"),
        lcp1.join("weights.safetensors"),
    )
    .unwrap();
    let log = std::fs::read_to_string(lcp1.join("metrics.jsonl")).unwrap();
    let first = log.lines().next().unwrap();
    std::fs::write(lcp1.join("metrics.jsonl"), format!("{first}\n")).unwrap();
    let out = trifecta(&seeded);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resuming after epoch 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(seeds_out.join("results.md")).unwrap(),
        table
    );
    // A log that cannot be read is named, not taken for a run that has not started.
    std::fs::write(seeds_out.join("lcp-seed1/metrics.jsonl"), "{bad\n").unwrap();
    let out = trifecta(&seeded);
    assert_one_line_error(&out, &["lcp-seed1", "metrics.jsonl", "line 1"]);
}

/// The labels `trifecta predict` printed, in its order: the second column of its lines.
fn predicted(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

/// The first `n` test images of the built-in sample, written as `00.png`... into `dir`; returns
/// them as a dataset.
fn sample_pngs(dir: &Path, n: usize) -> trifecta::data::Dataset {
    use trifecta::data::{DatasetKind, Split};
    let mut test = trifecta::data::load(DatasetKind::MnistSample, dir, Split::Test, false).unwrap();
    test.pixels.truncate(n * test.shape.numel());
    test.labels.truncate(n);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        image::GrayImage::from_raw(28, 28, test.image(i).to_vec())
            .unwrap()
            .save(dir.join(format!("{i:02}.png")))
            .unwrap();
    }
    test
}

/// `predict` on image files gives each the class evaluation gives the same pixels: 40 test
/// images of the sample written as PNG files, against the library's goodness of the
/// dataset's own images.
#[test]
fn predict_gives_the_classes_evaluation_gives() {
    use trifecta::backend::cpu::Cpu;
    let tmp = TempDir::new("predict");
    let run = tmp.path().join("run");
    assert!(run_quick(&run, 2).status.success());
    let n = 40;
    let images = tmp.path().join("images");
    let test = sample_pngs(&images, n);
    // A hidden file is not an image of the folder.
    std::fs::write(images.join(".notes.png"), b"not an image").unwrap();
    let out = trifecta(&[
        "predict",
        run.to_str().unwrap(),
        images.to_str().unwrap(),
        "--threads",
        "2",
        "--scores",
    ]);
    let got = predicted(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("epoch 2; 28x28 gray images; layer 5's goodness"),
        "{stdout}"
    );

    let backend = Cpu::new(2).unwrap();
    let config = trifecta::run::read_config(&run).unwrap();
    let mut net = trifecta::run::build_net(&backend, &config, &test).unwrap();
    let file = run.join("checkpoint.safetensors");
    let header = trifecta::run::checkpoint::load(&file, &mut net, &backend).unwrap();
    let (batch, _) = test.batch(&(0..n).collect::<Vec<_>>(), None);
    let goodness = net.goodness_per_label(&backend, &batch).unwrap();
    let want: Vec<String> = trifecta::ff::eval::predict(&goodness, 10, 6, n, &[5])
        .iter()
        .map(u32::to_string)
        .collect();
    assert_eq!(got, want);
    // --csv: the same labels and the goodness --scores printed, a row per image.
    let predict_csv = |image: &Path, csv: &Path| {
        trifecta(&[
            "predict",
            run.to_str().unwrap(),
            image.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ])
    };
    let csv = tmp.path().join("predictions.csv");
    assert_eq!(predicted(&predict_csv(&images, &csv)), want);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("path,label,class,goodness_0,goodness_1,"),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), n);
    let scores: Vec<&str> = stdout.lines().filter(|l| l.starts_with("    ")).collect();
    for (i, row) in rows.iter().enumerate() {
        assert!(row[0].ends_with(&format!("{i:02}.png")), "{row:?}");
        assert_eq!((row[1], row[2]), (want[i].as_str(), want[i].as_str()));
        let goodness: Vec<f32> = row[3..].iter().map(|g| g.parse().unwrap()).collect();
        assert_eq!(goodness.len(), 10);
        let best = (0..10).max_by(|&a, &b| goodness[a].total_cmp(&goodness[b]));
        assert_eq!(best.unwrap().to_string(), want[i]);
        let printed: Vec<String> = (0..10).map(|c| format!("{c} {:.3}", goodness[c])).collect();
        assert_eq!(scores[i].trim(), printed.join(", "));
    }
    // A CSV that cannot be written is found out before any image is scored; a prediction
    // that fails leaves the CSV already there as it was.
    let out = predict_csv(&images, &tmp.path().join("no-such-folder/p.csv"));
    assert_one_line_error(&out, &["no-such-folder/p.csv", "its folder does not exist"]);
    let out = predict_csv(&images, tmp.path());
    assert_one_line_error(&out, &["is a folder: --csv names the file"]);
    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    assert_one_line_error(
        &predict_csv(&bad, &csv),
        &["bad.png", "cannot decode image"],
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), text);
    // The checkpoint says what it takes.
    let inputs = header.inputs.expect("a new checkpoint records its inputs");
    assert_eq!((inputs.height, inputs.width, inputs.channels), (28, 28, 1));
    assert_eq!(
        (inputs.mean.clone(), inputs.std.clone()),
        (vec![0.1307], vec![0.3081])
    );
    assert_eq!(inputs.class_names.len(), 10);

    // eval --per-class: the test images by class, the right ones adding up to the accuracy.
    let out = trifecta(&["eval", run.to_str().unwrap(), "--per-class"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<(usize, f64)> = stdout
        .lines()
        .skip_while(|l| !l.contains("most often taken for"))
        .skip(1)
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let accuracy = fields[2]
                .trim_end_matches('%')
                .parse::<f64>()
                .unwrap_or(0.0);
            (fields[1].parse().unwrap(), accuracy)
        })
        .collect();
    assert_eq!(rows.len(), 10, "{stdout}");
    assert_eq!(rows.iter().map(|r| r.0).sum::<usize>(), 100, "{stdout}");
    let right: f64 = rows.iter().map(|(n, a)| *n as f64 * a / 100.0).sum();
    let ensemble = format!("accuracy {:.2}%", 100.0 * right / 100.0);
    assert!(stdout.contains(&ensemble), "{ensemble} not in {stdout}");

    // A colour image twice the size is made gray and resized: a note says so.
    let big = image::imageops::resize(
        &image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(28, 28, test.image(0).to_vec()).unwrap(),
        )
        .into_rgb8(),
        56,
        56,
        image::imageops::FilterType::Nearest,
    );
    let big_path = tmp.path().join("big.png");
    big.save(&big_path).unwrap();
    let out = trifecta(&["predict", run.to_str().unwrap(), big_path.to_str().unwrap()]);
    assert_eq!(predicted(&out).len(), 1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(resized from 56x56)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Its reader gone (`| head`), the command ends quietly, not in a panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_trifecta"))
        .args(["predict", run.to_str().unwrap(), images.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr(&out), "");

    // Bad input: one line naming the file.
    let out = trifecta(&["predict", run.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_one_line_error(&out, &["bad.png", "cannot decode image"]);
    let missing = tmp.path().join("missing.png");
    let out = trifecta(&["predict", run.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_one_line_error(&out, &["missing.png", "no such image"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = trifecta(&["predict", run.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_one_line_error(&out, &["empty", "no .png or .jpg"]);
    let out = trifecta(&[
        "predict",
        run.to_str().unwrap(),
        big_path.to_str().unwrap(),
        "--ensemble",
        "6",
    ]);
    assert_one_line_error(&out, &["ensemble layer 6"]);
}

/// An image folder's run names its classes, takes RGB at its own size, and a checkpoint
/// written before checkpoints recorded their inputs takes them from the run's data.
#[test]
fn predict_names_an_image_folders_classes() {
    let tmp = TempDir::new("predict-folder");
    let data = tmp.path().join("data");
    let mut rng = trifecta::rng::Rng::new(3);
    for (split, count) in [("train", 12), ("test", 4)] {
        for (class, base) in [("cat", 40u8), ("dog", 200u8)] {
            let dir = data.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(12, 12, |_, _| {
                    let v = base.saturating_add(rng.below(40) as u8);
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let run = tmp.path().join("run");
    let out = train_on("folder", &data, &run);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = [data.join("test/cat/0.png"), data.join("test/dog/0.png")];
    let args = |run: &Path| -> Vec<String> {
        ["predict", run.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .chain(files.iter().map(|f| f.to_str().unwrap().to_string()))
            .collect()
    };
    let got = predicted(&trifecta(&args(&run)));
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|c| c == "cat" || c == "dog"), "{got:?}");
    let header =
        trifecta::run::checkpoint::read_header(&run.join("checkpoint.safetensors")).unwrap();
    let inputs = header.inputs.unwrap();
    assert_eq!(inputs.class_names, ["cat", "dog"]);
    assert_eq!((inputs.height, inputs.width, inputs.channels), (12, 12, 3));
    assert!(inputs.mean.iter().all(|m| *m > 0.0 && *m < 1.0));

    // The same checkpoint without the record, as an older build wrote it.
    use trifecta::backend::cpu::Cpu;
    let backend = Cpu::new(2).unwrap();
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    let config = trifecta::run::read_config(&run).unwrap();
    let splits = trifecta::run::load_data(&config).unwrap();
    let mut net = trifecta::run::build_net(&backend, &config, &splits.train).unwrap();
    let file = run.join("checkpoint.safetensors");
    let mut header = trifecta::run::checkpoint::load(&file, &mut net, &backend).unwrap();
    header.inputs = None;
    let old_file = old.join("checkpoint.safetensors");
    trifecta::run::checkpoint::save(&old_file, &mut net, &backend, &header).unwrap();
    assert_eq!(predicted(&trifecta(&args(&old_file))), got);
    // Its data gone, it says where it looked.
    let moved = tmp.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    let files = [moved.join("test/cat/0.png"), moved.join("test/dog/0.png")];
    let mut told: Vec<String> = ["predict", old_file.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    told.extend(files.iter().map(|f| f.to_str().unwrap().to_string()));
    let out = trifecta(&told);
    assert_one_line_error(&out, &["data", "no such folder"]);
    // Told where it went, it finds it.
    told.extend(["--data-dir".into(), moved.to_str().unwrap().into()]);
    assert_eq!(predicted(&trifecta(&told)), got);
}

/// `train --print-config` prints the resolved configuration as TOML and trains nothing: fed
/// back as `--config` it prints the same, a run trained from it has it as its config.toml,
/// and with `--resume` it shows what the resumed run would take.
#[test]
fn print_config_is_the_config_a_run_would_take() {
    let tmp = TempDir::new("print-config");
    let run = tmp.path().join("run");
    let mut args = quick_args(&run, 1);
    args.extend(["--lr", "5e-4", "--print-config"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = trifecta(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("lr = 0.0005\n") && printed.contains("epochs = 1\n"),
        "{printed}"
    );
    assert!(!run.exists(), "--print-config made the run folder");
    let file = tmp.path().join("printed.toml");
    std::fs::write(&file, &printed).unwrap();
    let again = trifecta(&[
        "train",
        "--config",
        file.to_str().unwrap(),
        "--print-config",
    ]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);
    let trained = trifecta(&["train", "--config", file.to_str().unwrap()]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        printed
    );
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let resumed = trifecta(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "3",
        "--print-config",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&resumed.stdout),
        printed.replace("epochs = 1\n", "epochs = 3\n")
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint.safetensors")).unwrap(),
        before
    );
    // A bad knob is the same one-line error as without the flag.
    let out = trifecta(&["train", "--print-config", "--ensemble", "9"]);
    assert_one_line_error(&out, &["ensemble layer 9 does not exist"]);
}

/// A baseline run saves its whole state after every epoch (parameters, BatchNorm's running
/// statistics, Adam's moments and steps) and `--resume` goes on from there, ending as the run
/// that never stopped, bit for bit. An epoch logged but not saved (a process killed between
/// the two) is trained again.
#[test]
fn a_baseline_run_resumes_from_its_last_epoch_bit_for_bit() {
    let tmp = TempDir::new("baseline-resume");
    for model in ["bp", "lcp"] {
        let run_of = |name: &str, epochs: u64| {
            let run = tmp.path().join(format!("{model}-{name}"));
            let mut args = quick_args(&run, epochs);
            args.extend(["--model", model].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = trifecta(&args);
            assert!(out.status.success(), "{}", stderr(&out));
            // The closing line names the commands that read and continue it.
            let stdout = String::from_utf8_lossy(&out.stdout);
            let eval = format!("`trifecta eval {}`", run.display());
            let resume = format!("`trifecta train --resume {} --epochs N`", run.display());
            assert!(
                stdout.contains(&eval) && stdout.contains(&resume),
                "{stdout}"
            );
            run
        };
        let whole = run_of("whole", 3);
        let names: Vec<String> = tensors(&whole.join("weights.safetensors"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for wanted in [
            "block0.norm.running_mean",
            "block5.norm.running_var",
            "block5.conv.weight",
            "optimizer.block5.own.0.exp_avg_sq",
            "optimizer.block5.head.0.exp_avg",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{model}: {wanted} in {names:?}"
            );
        }
        let header =
            trifecta::run::checkpoint::read_weights_header(&whole.join("weights.safetensors"))
                .unwrap();
        assert_eq!(header.epoch, 3);
        assert_eq!(header.iteration, 3 * 6);

        let stopped = run_of("stopped", 1);
        let resume = |epochs: &str| {
            let out = trifecta(&[
                "train",
                "--resume",
                stopped.to_str().unwrap(),
                "--epochs",
                epochs,
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(resume("2").contains("resuming after epoch 1"));
        // Epoch 3 logged, its state not saved: the log loses it and the epoch is redone.
        let log = stopped.join("metrics.jsonl");
        let mut text = std::fs::read_to_string(&log).unwrap();
        let last = text
            .lines()
            .last()
            .unwrap()
            .replace("\"epoch\":2", "\"epoch\":3");
        text += &format!("{last}\n");
        std::fs::write(&log, text).unwrap();
        assert!(resume("3").contains("resuming after epoch 2"));
        assert_eq!(
            tensors(&whole.join("weights.safetensors")),
            tensors(&stopped.join("weights.safetensors")),
            "{model}"
        );
        assert_eq!(
            untimed_records(&whole),
            untimed_records(&stopped),
            "{model}"
        );
        assert!(resume("3").contains("nothing to do"));
    }
    // --max-steps would stop within an epoch, which a baseline cannot resume from.
    let mut args = quick_args(&tmp.path().join("bp-steps"), 2);
    args.extend(["--model", "bp", "--max-steps", "3"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = trifecta(&args);
    assert_one_line_error(&out, &["--max-steps", "resume only from an epoch's end"]);
    // An FF checkpoint is not a baseline's state, and a baseline's is not an FF checkpoint.
    let ff = tmp.path().join("ff");
    assert!(run_quick(&ff, 1).status.success());
    let err = trifecta::run::checkpoint::read_weights_header(&ff.join("checkpoint.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds an FF checkpoint, not a baseline"),
        "{err}"
    );
    let weights = tmp.path().join("bp-whole/weights.safetensors");
    let err = trifecta::run::checkpoint::read_header(&weights)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("baseline (bp/lcp) model's weights, not an FF"),
        "{err}"
    );
    let bp = tmp.path().join("bp-whole");
    // predict gives the classes of the library's last head, with its softmax probabilities;
    // an ensemble must name layers that have heads.
    let n = 12;
    let images = tmp.path().join("digits");
    let test = sample_pngs(&images, n);
    for model in ["bp", "lcp"] {
        let run = tmp.path().join(format!("{model}-whole"));
        let csv = tmp.path().join(format!("{model}.csv"));
        let out = trifecta(&[
            "predict",
            run.to_str().unwrap(),
            images.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ]);
        let got = predicted(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("{model} head on layer 5)")),
            "{stdout}"
        );
        let backend = trifecta::backend::cpu::Cpu::new(2).unwrap();
        let config = trifecta::run::read_config(&run).unwrap();
        let ff = trifecta::run::ff_config(&config, &test).unwrap();
        let kind = if model == "bp" {
            trifecta::baselines::Model::Bp
        } else {
            trifecta::baselines::Model::Lcp
        };
        let mut net = trifecta::baselines::ClassifierNet::new(&backend, ff, kind, 0).unwrap();
        trifecta::run::checkpoint::load(&run.join("weights.safetensors"), &mut net, &backend)
            .unwrap();
        let (batch, _) = test.batch(&(0..n).collect::<Vec<_>>(), None);
        let want: Vec<String> = net
            .predict(&backend, &batch)
            .unwrap()
            .pop()
            .unwrap()
            .iter()
            .map(u32::to_string)
            .collect();
        assert_eq!(got, want, "{model}");
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(
            text.starts_with("path,label,class,probability_0,"),
            "{text}"
        );
        for row in text.lines().skip(1) {
            let sum: f32 = row
                .split(',')
                .skip(3)
                .map(|p| p.parse::<f32>().unwrap())
                .sum();
            assert!((sum - 1.0).abs() < 1e-4, "{row}");
        }
    }
    let lcp = tmp.path().join("lcp-whole");
    let out = trifecta(&[
        "predict",
        lcp.to_str().unwrap(),
        images.to_str().unwrap(),
        "--ensemble",
        "3,5",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("lcp heads on layers [3, 5], mean probability")
    );
    let out = trifecta(&[
        "predict",
        bp.to_str().unwrap(),
        images.to_str().unwrap(),
        "--ensemble",
        "3",
    ]);
    assert_one_line_error(
        &out,
        &["layer 3 has no head", "bp network has heads on layers [5]"],
    );
    // A baseline run of an earlier build saved its parameters alone, under a header without
    // a format: reading it says so, whatever the command.
    let old = tmp.path().join("old-bp");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy(bp.join("config.toml"), old.join("config.toml")).unwrap();
    std::fs::copy(bp.join("metrics.jsonl"), old.join("metrics.jsonl")).unwrap();
    let value = [0u8; 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &value).unwrap();
    let metadata = std::collections::HashMap::from([(
        "trifecta".to_string(),
        r#"{"epoch":3,"config":{}}"#.to_string(),
    )]);
    let bytes = safetensors::serialize([("head0.linear.bias", view)], Some(metadata)).unwrap();
    std::fs::write(old.join("weights.safetensors"), bytes).unwrap();
    for args in [
        vec!["eval", old.to_str().unwrap()],
        vec!["train", "--resume", old.to_str().unwrap(), "--epochs", "4"],
        vec!["predict", old.to_str().unwrap(), images.to_str().unwrap()],
    ] {
        let out = trifecta(&args);
        assert_one_line_error(&out, &["weights.safetensors", "from an earlier trifecta"]);
    }
    // Backprop has one head, on the last layer: eval prints that layer alone, on every split
    // asked, the test's as its last record has it.
    let out = trifecta(&["eval", bp.to_str().unwrap(), "--ensemble", "5"]);
    assert_one_line_error(&out, &["a baseline's eval reports every head"]);
    let out = trifecta(&["eval", bp.to_str().unwrap(), "--on-train"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let layers: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  layer"))
        .collect();
    let last = untimed_records(&bp).pop().unwrap();
    let test = 100.0 * last["ensemble_accuracy"].as_f64().unwrap();
    assert_eq!(layers.len(), 1, "{stdout}");
    assert!(
        layers[0].starts_with("  layer 5: train ")
            && layers[0].ends_with(&format!(", test {test:.2}%")),
        "{stdout}"
    );
}
