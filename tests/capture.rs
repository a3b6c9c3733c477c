//! Output capture (issue 15) and the output-file half of the root
//! boundary (issue 11, part 3): real nodes, their log keeper, real
//! services writing into pipes.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use snow_fox::client::{Client, Logs};
use snow_fox::spawner::keeper::name_for;
use snow_fox::trace::parse_utc_time;
use snow_fox::wire::proto::public_api::{LogsRequest, log_lines::Line};

use common::scratch::stream_bytes;
use common::{Node, Setup, wait_for};

/// The lines of a stream's files, oldest first (`base.keep` ... `base.1`,
/// `base`), without their timestamps; every line must have one. A line
/// the keeper is still writing (no newline yet) is left out.
fn captured_lines(base: &Path, keep: u32) -> Vec<String> {
    let mut files: Vec<PathBuf> = (1..=keep)
        .rev()
        .map(|index| PathBuf::from(format!("{}.{index}", base.display())))
        .collect();
    files.push(base.to_owned());
    files
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .flat_map(|text| {
            let complete = text.rfind('\n').map_or(0, |end| end + 1);
            text[..complete]
                .lines()
                .map(|line| {
                    let (time, rest) = line
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("no timestamp: {line:?}"));
                    assert!(parse_utc_time(time).is_some(), "bad timestamp: {line:?}");
                    rest.to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// That `numbers` is 0, 1, ... `count - 1`: each line once, in order.
fn assert_each_once(numbers: &[u32], count: u32) {
    if let Some(position) = (0..count as usize).find(|&i| numbers.get(i) != Some(&(i as u32))) {
        panic!(
            "{} lines; the first out of place is at {position}: {:?} (around it: {:?})",
            numbers.len(),
            numbers.get(position),
            &numbers[position.saturating_sub(3)..(position + 3).min(numbers.len())]
        );
    }
    assert_eq!(
        numbers.len(),
        count as usize,
        "lines after the last expected one"
    );
}

/// The numbers of lines `prefix N`, in file order.
fn numbers(lines: &[String], prefix: &str) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(prefix))
        .map(|number| number.parse().unwrap())
        .collect()
}

#[test]
fn ten_thousand_lines_across_rotations_are_each_kept_exactly_once() {
    let setup = Setup::new("capture-lines").service(
        "counter",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 10000 ]; do echo \\\"line $i of the numbered output\\\"; i=$((i+1)); done\"]\n\
         restart = \"never\"\nlog_max_bytes = 100000\nlog_keep = 20\n",
    );
    let base = setup.log_dir().join("counter.0.stdout.log");
    let node = setup.start();
    wait_for("all 10,000 lines on disk", || {
        let lines = captured_lines(&base, 20);
        (lines.last().map(String::as_str) == Some("line 9999 of the numbered output")).then_some(())
    });
    let lines = captured_lines(&base, 20);
    let counted: Vec<u32> = lines
        .iter()
        .map(|line| {
            line.strip_prefix("line ")
                .and_then(|rest| rest.strip_suffix(" of the numbered output"))
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .unwrap()
        })
        .collect();
    assert_each_once(&counted, 10_000);
    let rotated = (1..=20)
        .filter(|index| Path::new(&format!("{}.{index}", base.display())).exists())
        .count();
    assert!(rotated >= 3, "only {rotated} rotations");
    for index in 1..=rotated {
        let size = fs::metadata(format!("{}.{index}", base.display()))
            .unwrap()
            .len();
        assert!(
            size <= 100_000,
            "{}.{index} holds {size} bytes",
            base.display()
        );
    }
    drop(node);
}

#[test]
fn a_writer_over_its_log_max_rate_is_slowed_to_it_and_loses_no_line() {
    const RATE: u64 = 512 * 1024;
    const LINES: u32 = 200_000;
    let setup = Setup::new("capture-rate").service(
        "fast",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"seq 0 {}; echo done; exec sleep 300\"]\n\
             log_max_bytes = 0\nlog_max_rate = {RATE}\nstderr = \"null\"\n",
            LINES - 1
        ),
    );
    let base = setup.log_dir().join("fast.0.stdout.log");
    let began = Instant::now();
    let node = setup.start();
    wait_for("the writer's last line", || {
        (captured_lines(&base, 0).last().map(String::as_str) == Some("done")).then_some(())
    });
    let elapsed = began.elapsed();
    let mut lines = captured_lines(&base, 0);
    assert_eq!(lines.pop().as_deref(), Some("done"));
    assert_each_once(&numbers(&lines, ""), LINES);
    // `seq` writes as fast as the pipe takes; the keeper reads one burst
    // (64 KiB at this rate) at once and then RATE bytes a second, so the
    // writer cannot have finished sooner than this.
    let written: u64 = (0..LINES).map(|n| n.to_string().len() as u64 + 1).sum();
    let least = Duration::from_secs_f64((written - 64 * 1024) as f64 / RATE as f64);
    assert!(
        elapsed >= least,
        "{written} bytes through a {RATE} B/s limit in {elapsed:?}, under {least:?}"
    );
    drop(node);
}

/// Starts and stops `service` back to back for `how_long`; how many
/// start+stop pairs were answered.
fn start_stop_pairs(node: &Node, service: &str, how_long: Duration) -> u32 {
    let mut client = node.client();
    let began = Instant::now();
    let mut pairs = 0;
    while began.elapsed() < how_long {
        client.start(service).unwrap();
        client.stop(service).unwrap();
        pairs += 1;
    }
    pairs
}

/// The pid of the log keeper serving `log_dir`, found by the name it was
/// started with.
fn keeper_pid(log_dir: &Path) -> Option<u32> {
    let uid = fs::metadata("/proc/self").ok()?.uid();
    let wanted = format!("--log-keeper\0{}\0", name_for(uid, log_dir));
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&wanted)
            .then(|| entry.file_name().to_str()?.parse().ok())
            .flatten()
    })
}

/// The nice value of the log keeper serving `log_dir`.
fn keeper_nice(log_dir: &Path) -> Option<i64> {
    common::scratch::pid_stat(keeper_pid(log_dir)?)?
        .get(16)?
        .parse()
        .ok()
}

#[test]
fn a_killed_keeper_ends_its_writers_and_their_restarts_get_a_new_keeper() {
    let setup = Setup::new("capture-keeper-kill").service(
        "ticker",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while :; do echo \\\"n $i\\\"; i=$((i+1)); sleep 0.01; done\"]\n\
         restart = \"always\"\nlog_max_bytes = 100000\nlog_keep = 10\n",
    );
    let log_dir = setup.log_dir();
    let base = log_dir.join("ticker.0.stdout.log");
    let node = setup.start();
    let status = |node: &Node| {
        node.client().status(Some("ticker")).unwrap().services[0].instances[0].clone()
    };
    let first = wait_for("the ticker to run", || status(&node).pid);
    wait_for("its first lines", || {
        (!captured_lines(&base, 10).is_empty()).then_some(())
    });
    let keeper = keeper_pid(&log_dir).expect("a log keeper runs");
    assert!(common::pid_alive(keeper));
    common::kill_9(keeper);
    // Its next write fails (EPIPE, SIGPIPE): the ticker ends, is started
    // again, and that start finds no keeper and starts a new one.
    let second = wait_for("the ticker restarted", || {
        status(&node)
            .pid
            .filter(|pid| *pid != first && status(&node).state == "running")
    });
    let new_keeper = wait_for("a new keeper", || {
        keeper_pid(&log_dir).filter(|pid| *pid != keeper)
    });
    let lines = captured_lines(&base, 10).len();
    wait_for("the restarted ticker's lines on disk", || {
        (captured_lines(&base, 10).len() > lines + 10).then_some(())
    });
    assert!(common::pid_alive(new_keeper));
    assert!(common::pid_alive(second));
    assert_eq!(keeper_nice(&log_dir), Some(10));
}

#[test]
fn a_writer_flat_out_for_10_s_slows_no_other_start_and_stays_within_the_disk_bound() {
    let setup = Setup::new("capture-flood")
        .service(
            "flood",
            "command = [\"/usr/bin/yes\", \"a line from a service that writes as fast as it can\"]\n\
             autostart = false\nlog_max_bytes = 1048576\nlog_keep = 1\n",
        )
        .service(
            "unrelated",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\nstdout = \"null\"\nstderr = \"null\"\nstart_grace = \"0s\"\n",
        );
    let setup_log_dir = setup.log_dir();
    let base = setup_log_dir.join("flood.0.stdout.log");
    let node = setup.start();
    let mut client = node.client();
    client.start("flood").unwrap();
    let flood = wait_for("the writer's pid", || {
        client.status(Some("flood")).unwrap().services[0].instances[0].pid
    });
    let bound = 1_048_576 * 2;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, base) = (sampling.clone(), base.clone());
        std::thread::spawn(move || {
            let (mut samples, mut peak) = (0u32, 0u64);
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(stream_bytes(&base));
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (samples, peak)
        })
    };
    // Half-second windows without the writer (stopped) and with it
    // (writing flat out), taken in turn, so both see the same other load
    // on a shared machine: 10 s of each.
    let (mut without, mut with) = (0, 0);
    for _ in 0..20 {
        common::signal(flood, "STOP");
        without += start_stop_pairs(&node, "unrelated", Duration::from_millis(500));
        common::signal(flood, "CONT");
        with += start_stop_pairs(&node, "unrelated", Duration::from_millis(500));
    }
    sampling.store(false, Ordering::Relaxed);
    let (samples, peak) = sampler.join().unwrap();
    let written = {
        let lines = captured_lines(&base, 1);
        assert!(
            lines
                .iter()
                .all(|line| line == "a line from a service that writes as fast as it can")
        );
        lines.len()
    };
    client.stop("flood").unwrap();
    eprintln!(
        "start+stop pairs in 10 s: {without} without the writer, {with} with it (ratio {:.2}); \
         disk peak {peak} bytes over {samples} samples (bound {bound}); {written} lines on disk at the end",
        f64::from(with) / f64::from(without.max(1))
    );
    assert!(samples > 100, "only {samples} samples");
    assert!(
        peak <= bound,
        "the writer's files peaked at {peak} bytes, over {bound}"
    );
    // The ratio is reported (README, capture figures: 0.97 and 0.98 on a
    // quiet 2-core machine, 0.50 before `log_max_rate`); asserted at 3/4,
    // below what other load on a shared machine moves it to.
    assert!(
        with * 4 >= without * 3,
        "{with} start+stop pairs answered with the writer, {without} without"
    );
    assert_eq!(
        keeper_nice(&setup_log_dir),
        Some(10),
        "the log keeper does not give way to the node"
    );
    assert!(
        Path::new(&format!("{}.1", base.display())).exists(),
        "the writer never filled a file"
    );
}

#[test]
fn kill_9_of_the_node_loses_no_line_written_while_it_was_gone() {
    let setup = Setup::new("capture-crash").service(
        "steady",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 3000 ]; do echo \\\"n $i\\\"; i=$((i+1)); \
         [ $((i % 50)) -eq 0 ] && sleep 0.05; done; echo done; exec sleep 300\"]\n\
         log_max_bytes = 20000\nlog_keep = 100\n",
    );
    let base = setup.log_dir().join("steady.0.stdout.log");
    let mut node = setup.start();
    let pid = wait_for("steady to run", || {
        node.client().status(Some("steady")).unwrap().services[0].instances[0].pid
    });
    wait_for("the first lines", || {
        (numbers(&captured_lines(&base, 100), "n ").len() > 100).then_some(())
    });
    node.crash();
    let at_crash = numbers(&captured_lines(&base, 100), "n ").len();
    wait_for("lines written while the node is dead", || {
        (numbers(&captured_lines(&base, 100), "n ").len() > at_crash + 200).then_some(())
    });
    assert!(common::pid_alive(pid), "the service died with the node");
    node.restart();
    wait_for("the service's last line", || {
        captured_lines(&base, 100)
            .last()
            .is_some_and(|line| line == "done")
            .then_some(())
    });
    assert_each_once(&numbers(&captured_lines(&base, 100), "n "), 3000);
    let instance = &node.client().status(Some("steady")).unwrap().services[0].instances[0];
    assert_eq!(instance.pid, Some(pid), "the same process, adopted");
}

#[test]
fn container_mode_sends_prefixed_lines_to_the_nodes_stderr() {
    let setup = Setup::new("capture-node").service(
        "web",
        "command = [\"/bin/sh\", \"-c\", \"echo hello from web; echo trouble >&2; exec sleep 300\"]\n\
         instances = 2\nstdout = \"node\"\nstderr = \"node\"\n",
    );
    let node = setup.start();
    wait_for("both instances' lines in the node's stderr", || {
        let text = node.log_text();
        [
            "web.0 | hello from web",
            "web.1 | hello from web",
            "web.0 | trouble",
            "web.1 | trouble",
        ]
        .iter()
        .all(|line| text.lines().any(|l| l == *line))
        .then_some(())
    });
    assert!(!node.setup.log_dir().join("web.0.stdout.log").exists());
}

#[test]
fn a_missing_output_directory_is_a_clear_error_and_is_not_created() {
    let node = Setup::new("capture-nodir").start();
    let missing = node.setup.dir.0.join("nowhere/deeper");
    node.setup.write_service(
        "lost",
        &format!(
            "command = [\"/bin/echo\", \"x\"]\nstdout = \"{}\"\n",
            missing.join("out.log").display()
        ),
    );
    // The configuration is refused as a whole (and, should the directory
    // vanish after it was checked, the keeper refuses the start: the
    // spawner's an_output_directory_is_never_created).
    let error = node.client().reload().unwrap_err().to_string();
    assert!(error.contains("does not exist"), "{error}");
    assert!(error.contains("nowhere/deeper"), "{error}");
    assert!(!node.setup.dir.0.join("nowhere").exists());
}

/// nobody, on the Linux distributions CI runs.
const NOBODY: u32 = 65534;

/// What an attack test works with: a directory nobody owns for the
/// service's output, and root's files the attacker aims at.
struct Target {
    out: PathBuf,
    /// Root's 0600 file, reachable by path.
    victim: PathBuf,
    /// Root's 0600 file in a 0700 root directory.
    hidden: PathBuf,
    /// Root's 0600 file of 2 MiB.
    large: PathBuf,
}

impl Target {
    fn new(setup: &Setup) -> Target {
        let root = &setup.dir.0;
        let out = root.join("out");
        fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
        let secret = root.join("secret");
        fs::create_dir(&secret).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
        let file = |path: PathBuf, content: Vec<u8>| {
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        Target {
            out,
            victim: file(root.join("victim"), b"root's own line\n".to_vec()),
            hidden: file(secret.join("hidden"), b"root's hidden line\n".to_vec()),
            large: file(root.join("large"), vec![b'r'; 2 << 20]),
        }
    }

    /// Each victim is as the test made it: content, mode, owner.
    fn assert_untouched(&self) {
        for (path, content) in [
            (&self.victim, b"root's own line\n".to_vec()),
            (&self.hidden, b"root's hidden line\n".to_vec()),
            (&self.large, vec![b'r'; 2 << 20]),
        ] {
            let metadata = fs::metadata(path).unwrap();
            assert_eq!(
                metadata.mode() & 0o7777,
                0o600,
                "{} mode changed",
                path.display()
            );
            assert_eq!(metadata.uid(), 0, "{} owner changed", path.display());
            assert!(
                fs::read(path).unwrap() == content,
                "{} content changed",
                path.display()
            );
        }
    }

    /// Every file in the output dir is a link the attacker made or a
    /// regular file nobody owns, none holding root's bytes.
    fn assert_output_is_nobodys(&self) {
        for entry in fs::read_dir(&self.out).unwrap() {
            // The keeper may still be rotating what was written last:
            // a file gone since the listing is skipped.
            let entry = entry.unwrap();
            let Ok(metadata) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if metadata.file_type().is_symlink() {
                continue;
            }
            assert_eq!(
                metadata.uid(),
                NOBODY,
                "{} is not nobody's",
                entry.path().display()
            );
            let text = fs::read(entry.path()).unwrap_or_default();
            assert!(!text.starts_with(b"root's") && !text.starts_with(b"rrrr"));
        }
    }
}

/// A node in thread mode (root in one process) or process mode (a root
/// spawner, the node as nobody) with one service running as nobody whose
/// stdout goes to `out/out.log`.
fn attacked_node(label: &str, process_mode: bool, service: &str) -> (Setup, Target) {
    let mut setup = Setup::new(label);
    if process_mode {
        setup = setup.node("user = \"nobody\"");
        fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let target = Target::new(&setup);
    let setup = setup.service(
        "victimiser",
        &format!(
            "{service}user = \"nobody\"\nautostart = false\nstdout = \"{}\"\n",
            target.out.join("out.log").display()
        ),
    );
    (setup, target)
}

#[test]
#[ignore = "needs root"]
fn a_link_at_the_output_file_before_the_start_is_refused_and_root_writes_nothing() {
    for process_mode in [false, true] {
        let (setup, target) = attacked_node(
            "attack-link",
            process_mode,
            "command = [\"/bin/echo\", \"written by nobody\"]\n",
        );
        let node = setup.start();
        for aim in [&target.victim, &target.hidden, &target.large] {
            let link = target.out.join("out.log");
            let _ = fs::remove_file(&link);
            symlink(aim, &link).unwrap();
            let error = node.client().start("victimiser").unwrap_err().to_string();
            assert!(
                error.contains("symbolic link"),
                "mode {process_mode}: {error}"
            );
            target.assert_untouched();
            assert!(!Path::new(&format!("{}.1", link.display())).exists());
        }
        target.assert_output_is_nobodys();
        assert!(
            node.log_text().contains("symbolic link"),
            "the refusal is logged: {}",
            node.log_text()
        );
    }
}

#[test]
#[ignore = "needs root"]
fn links_raced_in_at_the_rotated_names_are_replaced_never_written_through() {
    for process_mode in [false, true] {
        let (setup, target) = attacked_node(
            "attack-race",
            process_mode,
            "command = [\"/usr/bin/yes\", \"written by nobody\"]\nlog_max_bytes = 4096\nlog_keep = 3\n",
        );
        let node = setup.start();
        node.client().start("victimiser").unwrap();
        let racing = Arc::new(AtomicBool::new(true));
        let racer = {
            let (racing, out, aims) = (
                racing.clone(),
                target.out.clone(),
                [
                    target.victim.clone(),
                    target.hidden.clone(),
                    target.large.clone(),
                ],
            );
            std::thread::spawn(move || {
                let mut planted = 0u64;
                while racing.load(Ordering::Relaxed) {
                    for (index, aim) in (1..=3).zip(aims.iter().cycle()) {
                        let link = out.join(format!("out.log.{index}"));
                        let _ = fs::remove_file(&link);
                        if symlink(aim, &link).is_ok() {
                            planted += 1;
                        }
                    }
                }
                planted
            })
        };
        // Race through many rotations (the old copy-then-truncate lost
        // within about a second with log_keep = 3).
        let base = target.out.join("out.log");
        let began = Instant::now();
        let mut rotations_seen = 0;
        while began.elapsed() < Duration::from_secs(3) {
            if fs::symlink_metadata(format!("{}.1", base.display()))
                .is_ok_and(|metadata| metadata.file_type().is_file())
            {
                rotations_seen += 1;
            }
            target.assert_untouched();
        }
        racing.store(false, Ordering::Relaxed);
        let planted = racer.join().unwrap();
        node.client().stop("victimiser").unwrap();
        target.assert_untouched();
        target.assert_output_is_nobodys();
        assert!(planted > 100, "only {planted} links planted");
        assert!(rotations_seen > 0, "no rotation was seen while racing");
        // The keeper may still be draining the pipe after the stop, and a
        // rotation renames `out.log` before it opens the next one.
        let current = wait_for("a current out.log", || fs::symlink_metadata(&base).ok());
        assert!(current.file_type().is_file());
        assert_eq!(current.uid(), NOBODY);
    }
}

#[test]
#[ignore = "needs root"]
fn output_in_a_directory_the_service_user_owns_lands_there_as_that_user() {
    for process_mode in [false, true] {
        let (setup, target) = attacked_node(
            "attack-own",
            process_mode,
            "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 500 ]; do echo \\\"n $i\\\"; i=$((i+1)); done\"]\n\
             restart = \"never\"\nlog_max_bytes = 2000\nlog_keep = 100\n",
        );
        let node = setup.start();
        node.client().start("victimiser").unwrap();
        let base = target.out.join("out.log");
        wait_for("all 500 lines", || {
            (numbers(&captured_lines(&base, 100), "n ").len() == 500).then_some(())
        });
        assert_eq!(
            numbers(&captured_lines(&base, 100), "n "),
            (0..500).collect::<Vec<_>>()
        );
        target.assert_output_is_nobodys();
        assert!(Path::new(&format!("{}.3", base.display())).exists());
        drop(node);
    }
}

/// Every line a logs request sends until `done` says the collected lines
/// are complete (following), or until it is caught up (not following).
fn collect_logs(
    client: &mut Client,
    request: LogsRequest,
    mut done: impl FnMut(&[Line]) -> bool,
) -> Vec<Line> {
    let follow = request.follow();
    client.set_timeout(Some(common::DEADLINE)).unwrap();
    client.logs(request).unwrap();
    let mut lines = Vec::new();
    loop {
        match client.next_logs().unwrap() {
            Logs::Lines(mut more) => lines.append(&mut more),
            Logs::CaughtUp if !follow => return lines,
            Logs::CaughtUp => {}
        }
        if follow && done(&lines) {
            return lines;
        }
    }
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|line| format!("{}.{} {}", line.service_id, line.instance, line.text))
        .collect()
}

#[test]
fn logs_of_two_services_come_interleaved_in_the_order_they_arrived() {
    // Taking turns through files in the test's dir: each writes its line
    // 50 ms after the other's, so the keeper reads them in this order.
    let setup = Setup::new("logs-interleave");
    let dir = setup.dir.0.clone();
    let turn = |mine: &str, wait_for_theirs: &str| {
        format!(
            "command = [\"/bin/sh\", \"-c\", \"cd {}; for i in 0 1 2 3; do \
             while [ ! -e {wait_for_theirs} ]; do sleep 0.01; done; sleep 0.05; \
             echo {mine} $i; touch {mine}$((i+1)); done; exec sleep 300\"]\n",
            dir.display()
        )
    };
    fs::write(dir.join("b0"), "").unwrap();
    let setup = setup
        .service("a", &turn("a", "b$i"))
        .service("b", &turn("b", "a$((i+1))"));
    let node = setup.start();
    let mut client = node.client();
    let lines = collect_logs(
        &mut client,
        LogsRequest {
            service_ids: vec!["a".into(), "b".into()],
            follow: Some(true),
            ..Default::default()
        },
        |lines| lines.len() >= 8,
    );
    assert_eq!(
        texts(&lines),
        [
            "a.0 a 0", "b.0 b 0", "a.0 a 1", "b.0 b 1", "a.0 a 2", "b.0 b 2", "a.0 a 3", "b.0 b 3"
        ]
    );
    assert!(
        lines
            .windows(2)
            .all(|pair| pair[0].at_unix_us <= pair[1].at_unix_us)
    );

    // The client binary shows the same, prefixed, from the files on disk.
    let printed: Vec<String> = node
        .cli_stdout(&["logs", "all"])
        .lines()
        .map(|line| {
            let (prefix, rest) = line.split_once(" | ").unwrap();
            let (time, text) = rest.split_once(' ').unwrap();
            assert!(parse_utc_time(time).is_some(), "{line}");
            format!("{prefix} {text}")
        })
        .collect();
    assert_eq!(printed, texts(&lines));
}

#[test]
fn logs_with_n_and_since_give_the_last_lines_and_the_later_lines() {
    let setup = Setup::new("logs-n-since").service(
        "burst",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 100 ]; do echo n $i; [ $i -eq 49 ] && sleep 0.3; i=$((i+1)); done; exec sleep 300\"]\n",
    );
    let base = setup.log_dir().join("burst.0.stdout.log");
    let node = setup.start();
    wait_for("100 lines", || {
        (numbers(&captured_lines(&base, 1), "n ").len() == 100).then_some(())
    });
    let mut client = node.client();
    let request = |lines: Option<u32>, since: Option<u64>| LogsRequest {
        service_ids: vec!["burst".into()],
        lines,
        since_unix_us: since,
        ..Default::default()
    };
    let all = collect_logs(&mut client, request(None, None), |_| true);
    assert_eq!(all.len(), 100);
    let last = collect_logs(&mut client, request(Some(5), None), |_| true);
    assert_eq!(
        texts(&last),
        [
            "burst.0 n 95",
            "burst.0 n 96",
            "burst.0 n 97",
            "burst.0 n 98",
            "burst.0 n 99"
        ]
    );
    let since = all[50].at_unix_us;
    assert!(all[49].at_unix_us < since, "the sleep separates the halves");
    let later = collect_logs(&mut client, request(None, Some(since)), |_| true);
    assert_eq!(texts(&later), texts(&all[50..]));
    let both = collect_logs(&mut client, request(Some(3), Some(since)), |_| true);
    assert_eq!(texts(&both), texts(&all[97..]));
    let unknown = {
        let mut client = node.client();
        client
            .logs(LogsRequest {
                service_ids: vec!["ghost".into()],
                ..Default::default()
            })
            .unwrap();
        client.next_logs().unwrap_err().to_string()
    };
    assert!(unknown.contains("ghost"), "{unknown}");
}

#[test]
fn logs_follow_across_rotations_loses_and_repeats_no_line() {
    let setup = Setup::new("logs-follow").service(
        "counter",
        "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 10000 ]; do echo \\\"line $i\\\"; i=$((i+1)); \
         [ $((i % 250)) -eq 0 ] && sleep 0.05; done; exec sleep 300\"]\n\
         autostart = false\nlog_max_bytes = 20000\nlog_keep = 100\n",
    );
    let base = setup.log_dir().join("counter.0.stdout.log");
    let node = setup.start();
    node.client().start("counter").unwrap();
    // Join while it writes: the backlog, then what follows.
    wait_for("some rotated lines", || {
        Path::new(&format!("{}.1", base.display()))
            .exists()
            .then_some(())
    });
    let mut follower = node.client();
    let lines = collect_logs(
        &mut follower,
        LogsRequest {
            service_ids: vec!["counter".into()],
            follow: Some(true),
            ..Default::default()
        },
        |lines| lines.last().is_some_and(|line| line.text == "line 9999"),
    );
    let numbers: Vec<u32> = lines
        .iter()
        .map(|line| line.text.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert_each_once(&numbers, 10_000);
    let rotations = (1..=100)
        .filter(|index| Path::new(&format!("{}.{index}", base.display())).exists())
        .count();
    assert!(rotations >= 10, "only {rotations} rotations");
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> SmallDisk {
        fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        SmallDisk(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[ignore = "needs root"]
fn a_full_disk_loses_lines_counted_by_a_marker_and_never_blocks_the_service() {
    let setup = Setup::new("capture-full");
    let disk = SmallDisk::mount(setup.dir.0.join("small"), "64k");
    let go = setup.dir.0.join("go");
    let setup = setup.service(
        "chatty",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 20000 ]; do echo \\\"line $i with some padding\\\"; \
             i=$((i+1)); done; echo finished >&2; while [ ! -e {} ]; do sleep 0.05; done; echo after the space came back\"]\n\
             restart = \"never\"\nstdout = \"{}\"\nlog_max_bytes = 10485760\nlog_max_rate = 0\n",
            go.display(),
            disk.0.join("out.log").display()
        ),
    );
    let out = disk.0.join("out.log");
    let errors = setup.log_dir().join("chatty.0.stderr.log");
    let node = setup.start();
    // 20,000 lines (about 900 kB with timestamps) into 64 kB: the service
    // gets through them all, never blocked by the full disk. (No read
    // budget, so that the keeper has read every line by the time the
    // service says it finished; the budget has its own test.)
    wait_for("the service to finish writing", || {
        fs::read_to_string(&errors)
            .ok()?
            .contains("finished")
            .then_some(())
    });
    let kept = fs::read_to_string(&out).unwrap().lines().count();
    assert!(kept < 5000, "{kept} lines fit on a 64 kB disk?");
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&out)
        .unwrap();
    fs::write(&go, "").unwrap();
    let text = wait_for("the line after the space came back", || {
        let text = fs::read_to_string(&out).ok()?;
        text.contains("after the space came back").then_some(text)
    });
    let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    let marker = lines[lines.len() - 2];
    let (time, rest) = marker.split_once(' ').unwrap();
    assert!(parse_utc_time(time).is_some(), "{marker}");
    let lost: usize = rest
        .strip_prefix("snow-fox: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no marker before the last line: {marker:?}"));
    assert!(rest.contains("No space left on device"), "{marker}");
    // Every line is on disk or counted; a record cut short by the full
    // disk is both.
    assert!(
        (20_000..=20_001).contains(&(kept + lost)),
        "kept {kept} + lost {lost}"
    );
    assert!(lines[lines.len() - 1].ends_with(" after the space came back"));
    drop(node);
}

#[test]
#[ignore = "needs root"]
fn in_process_mode_the_unprivileged_node_serves_the_root_owned_logs() {
    let setup = Setup::new("logs-privsep")
        .node("user = \"nobody\"")
        .service(
            "talker",
            "command = [\"/bin/sh\", \"-c\", \"echo said by root; echo also to stderr >&2; exec sleep 300\"]\n",
        )
        .service(
            "shy",
            "command = [\"/bin/sh\", \"-c\", \"echo said by nobody; exec sleep 300\"]\nuser = \"nobody\"\n",
        );
    fs::set_permissions(&setup.dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let log_dir = setup.log_dir();
    let node = setup.start();
    let mut client = node.client();
    let lines = collect_logs(
        &mut client,
        LogsRequest {
            follow: Some(true),
            ..Default::default()
        },
        |lines| lines.len() >= 3,
    );
    let mut seen = texts(&lines);
    seen.sort();
    assert_eq!(
        seen,
        [
            "shy.0 said by nobody",
            "talker.0 also to stderr",
            "talker.0 said by root"
        ]
    );
    // Root's files in root's log dir, readable by the node's group only.
    let file = fs::metadata(log_dir.join("talker.0.stdout.log")).unwrap();
    assert_eq!(
        (file.uid(), file.gid(), file.mode() & 0o777),
        (0, NOBODY, 0o640)
    );
    let dir = fs::metadata(&log_dir).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o750));
}
