//! The v1/v2 difference against fake cgroup filesystems in temp dirs:
//! what is created where, what is written, what is refused and why.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// A temp dir removed on drop.
struct Fake(PathBuf);

impl Fake {
    fn new(label: &str) -> Fake {
        let dir = std::env::temp_dir().join(format!(
            "sf-cgroup-{label}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        Fake(dir)
    }

    fn touch(&self, path: &str, content: &str) -> PathBuf {
        let path = self.0.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.0.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The development machine's layout: memory, pids and cpu in v1 (memory
/// in a nested cgroup), an empty unified tree.
fn hybrid() -> Fake {
    let fake = Fake::new("hybrid");
    fake.touch("unified/cgroup.procs", "");
    fake.touch("unified/cgroup.controllers", "");
    fake.touch("memory/cgroup.procs", "");
    fs::create_dir_all(fake.0.join("memory/box/1")).unwrap();
    fake.touch("pids/cgroup.procs", "");
    fake.touch("cpu/cgroup.procs", "");
    fake
}

const HYBRID_SELF: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/box/1\n1:cpu:/\n0::/\n";

fn limits() -> Limits {
    Limits {
        memory_max: Some(64 << 20),
        memory_high: None,
        cpu_max: Some(CpuMax {
            quota_usec: 50_000,
            period_usec: 100_000,
        }),
        pids_max: Some(20),
    }
}

#[test]
fn hybrid_hosts_use_v1_for_limits_and_the_unified_tree_for_membership() {
    let fake = hybrid();
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n1").unwrap();
    assert!(hierarchy.missing().is_empty(), "{:?}", hierarchy.missing());
    for base in [
        "unified/snow-fox.n1",
        "memory/box/1/snow-fox.n1",
        "pids/snow-fox.n1",
        "cpu/snow-fox.n1",
    ] {
        assert!(fake.0.join(base).is_dir(), "{base}");
    }
    let cgroup = hierarchy.create("web.0", &limits()).unwrap();
    assert_eq!(
        fake.read("memory/box/1/snow-fox.n1/web.0/memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(fake.read("pids/snow-fox.n1/web.0/pids.max"), "20");
    assert_eq!(
        fake.read("cpu/snow-fox.n1/web.0/cpu.cfs_period_us"),
        "100000"
    );
    assert_eq!(fake.read("cpu/snow-fox.n1/web.0/cpu.cfs_quota_us"), "50000");
    assert!(fake.0.join("unified/snow-fox.n1/web.0").is_dir());
    // The child joins every one of them.
    assert_eq!(cgroup.to_wire().len(), 4);
    let files = cgroup.procs_files();
    assert!(
        files.is_err(),
        "a fake dir has no cgroup.procs until the kernel makes one"
    );
    for dir in [
        "unified/snow-fox.n1",
        "memory/box/1/snow-fox.n1",
        "pids/snow-fox.n1",
        "cpu/snow-fox.n1",
    ] {
        fake.touch(&format!("{dir}/web.0/cgroup.procs"), "");
    }
    assert_eq!(cgroup.procs_files().unwrap().len(), 4);
    assert_eq!(InstanceCgroup::from_wire(&cgroup.to_wire()), Some(cgroup));
}

#[test]
fn without_cpu_max_no_v1_cpu_cgroup_is_made() {
    let fake = hybrid();
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n1").unwrap();
    let cgroup = hierarchy.create("web.0", &Limits::default()).unwrap();
    assert!(!fake.0.join("cpu/snow-fox.n1/web.0").exists());
    let kinds: Vec<String> = cgroup
        .to_wire()
        .iter()
        .map(|line| line.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["unified", "memory"]);
    // A cgroup left from before may hold old limits: taken over, each is
    // set to "no limit".
    fake.touch(
        "memory/box/1/snow-fox.n1/db.0/memory.limit_in_bytes",
        "1048576",
    );
    fake.touch("pids/snow-fox.n1/db.0/pids.max", "5");
    hierarchy.create("db.0", &Limits::default()).unwrap();
    assert_eq!(
        fake.read("memory/box/1/snow-fox.n1/db.0/memory.limit_in_bytes"),
        "-1"
    );
    // No pids_max: its v1 pids cgroup is not joined, so not touched.
    assert_eq!(fake.read("pids/snow-fox.n1/db.0/pids.max"), "5");
    // A new cgroup starts without limits: nothing is written to it.
    assert!(
        !fake
            .0
            .join("memory/box/1/snow-fox.n1/web.0/memory.limit_in_bytes")
            .exists()
    );
}

#[test]
fn memory_high_is_refused_on_v1_naming_the_limit_and_why() {
    let fake = hybrid();
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n1").unwrap();
    let high = Limits {
        memory_high: Some(1 << 20),
        ..Limits::default()
    };
    let error = hierarchy.create("web.0", &high).unwrap_err().to_string();
    assert!(
        error.starts_with("memory_high cannot be enforced"),
        "{error}"
    );
    assert!(error.contains("cgroup v2"), "{error}");
    assert!(
        !fake.0.join("unified/snow-fox.n1/web.0").exists(),
        "nothing is left"
    );
}

#[test]
fn a_missing_controller_refuses_only_the_limits_that_need_it() {
    let fake = hybrid();
    fs::remove_dir_all(fake.0.join("cpu")).unwrap();
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n1").unwrap();
    assert_eq!(hierarchy.missing().len(), 1, "{:?}", hierarchy.missing());
    let error = hierarchy
        .create("web.0", &limits())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("cpu_max cannot be enforced: no cpu controller"),
        "{error}"
    );
    let memory_only = Limits {
        memory_max: Some(1 << 20),
        ..Limits::default()
    };
    hierarchy.create("web.0", &memory_only).unwrap();
}

#[test]
fn pure_v2_delegates_the_controllers_and_writes_v2_files() {
    let fake = Fake::new("v2");
    fake.touch("cgroup.controllers", "cpu memory pids io");
    fake.touch("svc/cgroup.controllers", "cpu memory pids");
    fake.touch("svc/cgroup.subtree_control", "");
    let hierarchy = Hierarchy::open(&fake.0, "0::/svc\n", "n2").unwrap();
    assert!(hierarchy.missing().is_empty(), "{:?}", hierarchy.missing());
    assert!(hierarchy.describe().contains("memory (v2)"));
    // The last controller enabled (files hold the last write).
    assert_eq!(fake.read("svc/cgroup.subtree_control"), "+pids");
    assert_eq!(fake.read("svc/snow-fox.n2/cgroup.subtree_control"), "+pids");
    let mut with_high = limits();
    with_high.memory_high = Some(48 << 20);
    let cgroup = hierarchy.create("db.1", &with_high).unwrap();
    assert_eq!(cgroup.to_wire().len(), 1, "one directory holds it all");
    assert_eq!(
        fake.read("svc/snow-fox.n2/db.1/memory.max"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        fake.read("svc/snow-fox.n2/db.1/memory.high"),
        (48u64 << 20).to_string()
    );
    assert_eq!(fake.read("svc/snow-fox.n2/db.1/cpu.max"), "50000 100000");
    assert_eq!(fake.read("svc/snow-fox.n2/db.1/pids.max"), "20");
}

#[test]
fn v2_without_delegated_controllers_keeps_membership_and_refuses_limits() {
    let fake = Fake::new("v2-bare");
    fake.touch("cgroup.controllers", "cpu memory pids");
    fs::create_dir_all(fake.0.join("svc")).unwrap();
    let hierarchy = Hierarchy::open(&fake.0, "0::/svc\n", "n3").unwrap();
    assert_eq!(hierarchy.missing().len(), 3);
    hierarchy.create("web.0", &Limits::default()).unwrap();
    let error = hierarchy
        .create(
            "web.1",
            &Limits {
                pids_max: Some(5),
                ..Limits::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("pids_max cannot be enforced: no pids controller"),
        "{error}"
    );
}

#[test]
fn no_cgroup_filesystem_or_a_bad_name_means_no_cgroups() {
    let fake = Fake::new("none");
    let error = Hierarchy::open(&fake.0, HYBRID_SELF, "n4")
        .unwrap_err()
        .to_string();
    assert!(error.contains("no cgroup filesystem"), "{error}");
    let fake = hybrid();
    for name in ["../up", "a/b", ".hidden", ""] {
        let error = Hierarchy::open(&fake.0, HYBRID_SELF, name)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot name a cgroup"), "{name}: {error}");
    }
    assert!(!fake.0.join("snow-fox.").exists());
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n4").unwrap();
    assert!(hierarchy.create("../../etc", &Limits::default()).is_err());
    // A cluster instance's service id holds an `@`.
    assert!(hierarchy.create("web@2.0", &Limits::default()).is_ok());
}

#[test]
fn membership_kill_and_removal_follow_the_kernel_files() {
    let fake = hybrid();
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n5").unwrap();
    let cgroup = hierarchy.create("web.0", &Limits::default()).unwrap();
    let unified = "unified/snow-fox.n5/web.0";
    fake.touch(
        &format!("{unified}/cgroup.events"),
        "populated 1\nfrozen 0\n",
    );
    fake.touch(&format!("{unified}/cgroup.procs"), "4242\n4243\n");
    fake.touch(&format!("{unified}/cgroup.kill"), "");
    assert!(!cgroup.is_empty());
    assert_eq!(cgroup.members(), [4242, 4243]);
    assert!(cgroup.contains(4243) && !cgroup.contains(1));
    cgroup.kill();
    assert_eq!(fake.read(&format!("{unified}/cgroup.kill")), "1");
    fake.touch(
        &format!("{unified}/cgroup.events"),
        "populated 0\nfrozen 0\n",
    );
    assert!(cgroup.is_empty());
    // The kernel's directories hold only its own files; here they go by
    // hand before rmdir.
    for dir in [unified, "memory/box/1/snow-fox.n5/web.0"] {
        for entry in fs::read_dir(fake.0.join(dir)).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
    cgroup.remove().unwrap();
    assert!(!fake.0.join(unified).exists());
    assert_eq!(hierarchy.existing("web.0"), None);
    hierarchy.remove_bases();
    assert!(!fake.0.join("unified/snow-fox.n5").exists());
    assert!(!fake.0.join("memory/box/1/snow-fox.n5").exists());
}

#[test]
fn oom_kills_and_metrics_are_read_from_either_version() {
    let fake = hybrid();
    let hierarchy = Hierarchy::open(&fake.0, HYBRID_SELF, "n6").unwrap();
    let cgroup = hierarchy.create("web.0", &Limits::default()).unwrap();
    let memory = "memory/box/1/snow-fox.n6/web.0";
    fake.touch(
        &format!("{memory}/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    fake.touch(&format!("{memory}/memory.usage_in_bytes"), "1048576\n");
    fake.touch(&format!("{memory}/memory.max_usage_in_bytes"), "2097152\n");
    // Tasks: the unified tree's threads (no pids_max, no v1 pids cgroup).
    fake.touch("unified/snow-fox.n6/web.0/cgroup.threads", "7\n8\n9\n");
    fake.touch(
        "unified/snow-fox.n6/web.0/cpu.stat",
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
    );
    assert_eq!(cgroup.oom_kills(), 2);
    assert_eq!(
        cgroup.metrics(),
        Metrics {
            cpu_usec: Some(1_500_000),
            memory_current: Some(1 << 20),
            memory_peak: Some(2 << 20),
            tasks: Some(3),
        }
    );

    let fake = Fake::new("v2-metrics");
    fake.touch("cgroup.controllers", "memory pids");
    fake.touch("cgroup.subtree_control", "");
    let hierarchy = Hierarchy::open(&fake.0, "0::/\n", "n6").unwrap();
    let cgroup = hierarchy.create("web.0", &Limits::default()).unwrap();
    let dir = "snow-fox.n6/web.0";
    fake.touch(
        &format!("{dir}/memory.events"),
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
    );
    fake.touch(&format!("{dir}/memory.current"), "4096\n");
    fake.touch(&format!("{dir}/memory.peak"), "8192\n");
    fake.touch(&format!("{dir}/cgroup.threads"), "1\n2\n");
    assert_eq!(cgroup.oom_kills(), 1);
    let metrics = cgroup.metrics();
    assert_eq!(metrics.memory_current, Some(4096));
    assert_eq!(metrics.memory_peak, Some(8192));
    assert_eq!(metrics.tasks, Some(2), "no pids.current: threads counted");
}

#[test]
fn the_own_cgroup_comes_from_proc_self_cgroup() {
    let lines = own_cgroups("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice/x\n");
    assert_eq!(lines[0], (vec!["memory"], "/process_api/abc"));
    assert_eq!(lines[1], (vec!["cpu", "cpuacct"], "/"));
    assert_eq!(lines[2], (Vec::<&str>::new(), "/user.slice/x"));
    assert_eq!(under(Path::new("/fs"), "/a/b"), PathBuf::from("/fs/a/b"));
}

#[test]
fn v2_controllers_that_cannot_be_passed_down_are_named_with_why() {
    let fake = Fake::new("v2-busy");
    fake.touch("cgroup.controllers", "memory pids");
    fake.touch("svc/cgroup.controllers", "memory pids");
    // The kernel refuses the write (EBUSY when the cgroup holds
    // processes); a directory in the file's place refuses it here.
    fs::create_dir_all(fake.0.join("svc/cgroup.subtree_control")).unwrap();
    let hierarchy = Hierarchy::open(&fake.0, "0::/svc\n", "n7").unwrap();
    let missing = hierarchy.missing();
    assert_eq!(missing.len(), 3, "{missing:?}");
    assert!(
        missing[0].starts_with("memory: cgroup v2 cannot pass it below"),
        "{missing:?}"
    );
    let error = hierarchy
        .create(
            "web.0",
            &Limits {
                memory_max: Some(1 << 20),
                ..Limits::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("start the node in a cgroup of its own"),
        "{error}"
    );
}

#[test]
fn a_base_another_node_of_the_same_name_removed_is_made_again() {
    let fake = hybrid();
    let first = Hierarchy::open(&fake.0, HYBRID_SELF, "same").unwrap();
    let second = Hierarchy::open(&fake.0, HYBRID_SELF, "same").unwrap();
    // The second node stops first and removes the (empty) bases.
    second.remove_bases();
    assert!(!fake.0.join("unified/snow-fox.same").exists());
    first.create("app.0", &limits()).unwrap();
    for dir in [
        "unified/snow-fox.same/app.0",
        "memory/box/1/snow-fox.same/app.0",
        "pids/snow-fox.same/app.0",
        "cpu/snow-fox.same/app.0",
    ] {
        assert!(fake.0.join(dir).is_dir(), "{dir}");
    }
}
