#!/usr/bin/env bash
# Writes link/snow-fox.order, the functions lld lays out first in the node
# binary (build.rs): those a node runs while it starts 100 services and
# rests (first), then those it runs serving clients (after them), as
# callgrind saw them. Symbol names carry a hash of the build's metadata,
# and `cargo build --release` and the build `cargo test --release` and
# `cargo bench` make (dev-dependencies' features unified in) differ, so
# both are built and profiled and the list holds the names of both. Rerun
# it when the code or the dependencies changed much (the footprint bench's
# RSS rises as the list goes stale; a name the binary lacks is ignored):
#
#   link/order.sh && cargo build --release
#
# Needs valgrind and python3; takes a few minutes (two release builds).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs the node binary $1 under callgrind: $2.rest lists the functions it
# ran while starting 100 services and resting, $2.serving the others it
# ran while serving the client requests below.
profile() {
    local node=$1 out=$2 dir
    dir=$(mktemp -d "$work/node.XXXX")
    mkdir -p "$dir/conf/services"
    printf 'name = "order"\nsocket = "%s/sf.sock"\nstate_dir = "%s/state"\nlog_dir = "%s/log"\n' \
        "$dir" "$dir" "$dir" > "$dir/conf/node.toml"
    for i in $(seq -w 1 100); do
        printf 'command = ["/bin/sleep", "3600"]\nautostart = true\nstdout = "null"\nstderr = "null"\nrestart = "always"\nstable_after = "1s"\n' \
            > "$dir/conf/services/s$i.toml"
    done
    RUST_LOG=warn valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/cg.out" \
        "$node" --conf "$dir/conf" > "$dir/valgrind.log" 2>&1 &
    local pid=$!
    sf() { "$work/client" --socket "$dir/sf.sock" "$@" > /dev/null 2>&1; }
    for _ in $(seq 1 600); do
        [ -S "$dir/sf.sock" ] && break
        sleep 0.1
    done
    # Part 1: start, 100 services started, at rest.
    sf info
    for i in $(seq -w 1 100); do
        sf wait "s$i" --timeout 5m
    done
    sf status
    sleep 2
    callgrind_control --dump=rest "$pid" > /dev/null
    # Part 2: what clients ask of it (errors are code paths too).
    sf stop s001 || true
    sf start s001 || true
    sf restart s002 || true
    sf signal s003 HUP || true
    sf is-active s004 || true
    sf cat s005 || true
    sf reload || true
    sf metrics || true
    sf logs s001 || true
    sf top -n 1 || true
    sf trace x || true
    sf info --verbose || true
    sf bench --clients 8 --inflight 4 --duration 2s --warmup 0s || true
    sf bench --clients 1 --inflight 16 --request status --duration 1s --warmup 0s || true
    kill -TERM "$pid"
    wait "$pid" || true
    python3 - "$dir" "$node" "$out" <<'EOF'
import re, subprocess, sys
directory, node, out = sys.argv[1:]
defined = set()
for line in subprocess.run(["nm", "--defined-only", node],
                           capture_output=True, text=True, check=True).stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in "tTwW":
        defined.add(fields[2])

def executed(path):
    """The node's own functions with a cost in one callgrind part."""
    objects, functions, found = {}, {}, {}
    current_object = current_function = None
    for line in open(path):
        match = re.match(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if match:
            kind, number, name = match.groups()
            table = objects if kind.endswith("ob") else functions
            if name is not None:
                table[number] = re.sub(r"'\d+$", "", name)
            if kind == "ob":
                current_object = objects.get(number)
            elif kind == "fn":
                current_function = functions.get(number)
        elif line[:1].isdigit() and current_object == node and current_function in defined:
            found[current_function] = None
    return list(found)

# cg.out.1 is the dump at rest, cg.out the rest of the run.
rest = executed(directory + "/cg.out.1")
serving = [name for name in executed(directory + "/cg.out") if name not in rest]
open(out + ".rest", "w").write("".join(name + "\n" for name in rest))
open(out + ".serving", "w").write("".join(name + "\n" for name in serving))
EOF
}

cargo build --release --bins
cp target/release/snow-fox "$work/built"
cp target/release/snow-fox-client "$work/client"
profile "$work/built" "$work/built"
cargo bench --no-run --bench footprint
cp target/release/snow-fox "$work/tested"
profile "$work/tested" "$work/tested"
{
    echo "# Written by link/order.sh: the node's functions as it starts and rests,"
    echo "# then as it serves clients, in two builds (see there). lld lays them"
    echo "# out first (build.rs)."
    cat "$work/built.rest" "$work/tested.rest" "$work/built.serving" "$work/tested.serving" | awk '!seen[$0]++'
} > link/snow-fox.order
echo "link/snow-fox.order: $(grep -vc '^#' link/snow-fox.order) functions"
