#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for testing profiles/slurm.
#
#   tools/slurm/local-cluster.sh install                 install slurm-wlm + munge (Debian) when missing
#   tools/slurm/local-cluster.sh start [--state-dir DIR] install if needed, write the config, start
#                                                        munged, slurmctld and slurmd on 127.0.0.1
#   tools/slurm/local-cluster.sh status                  sinfo and squeue of the running cluster
#   tools/slurm/local-cluster.sh stop                    cancel its jobs, stop what `start` started,
#                                                        remove its config from /etc/slurm
#   tools/slurm/local-cluster.sh run [--state-dir DIR] -- CMD...
#                                                        start, run CMD, stop (also on failure)
#
# The node is this machine (its short hostname, address 127.0.0.1) with
# CPUs=$(nproc), RealMemory=LOCAL_SLURM_MEMORY_MB (default: its memory, at
# least 32000 MB, so that the workflow's per-rule requests such as train's
# 16000 MB fit; nothing enforces memory here) and GPUs: the real /dev/nvidia*
# devices when present, otherwise one placeholder device node, so that GPU
# requests (--gpus=1) are scheduled and Slurm sets CUDA_VISIBLE_DEVICES.
# Partitions: `cpu` (default) and `gpu`, both on that node. There is no
# slurmdbd: `sacct` does not work, job states come from `squeue --states=all`
# (MinJobAge=3600) and finished jobs are written to the job completion log
# <state dir>/log/jobcomp.log.
#
# Config goes to /etc/slurm/slurm.conf and /etc/slurm/gres.conf (where srun
# inside a job looks for it); a Slurm config that this script did not write
# is never touched: `start` refuses instead. State, spool, pid and log files
# live in the state dir (a new temporary directory unless --state-dir is given).
#
# Exit status 77: Slurm cannot be started here (not root, or Slurm missing and
# no apt-get). Tests skip on 77 and fail on anything else.
#
# Environment: SLURMCTLD_PORT (6817), SLURMD_PORT (6818), LOCAL_SLURM_MEMORY_MB.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SLURM_ETC=/etc/slurm
CONF="$SLURM_ETC/slurm.conf"
GRES_CONF="$SLURM_ETC/gres.conf"
MARKER="written by tools/slurm/local-cluster.sh"
CANNOT=77
export PATH="/usr/sbin:/sbin:$PATH"
export SLURM_CONF="$CONF"  # this cluster's, whatever the caller's environment says

say() { echo "local-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }
cannot() { say "cannot start Slurm here: $*"; exit "$CANNOT"; }

have_slurm() {
    local tool
    for tool in slurmctld slurmd sbatch srun squeue sinfo scontrol scancel munged munge unmunge; do
        command -v "$tool" > /dev/null 2>&1 || return 1
    done
}

cmd_install() {
    if have_slurm; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || cannot "Slurm is not installed and installing it needs root (apt-get install slurm-wlm munge)"
    command -v apt-get > /dev/null 2>&1 || cannot "Slurm is not installed and there is no apt-get to install it (need slurmctld, slurmd, sbatch, srun, squeue, munged)"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq > /dev/null || say "warning: apt-get update failed; trying the cached package lists"
    # policy-rc.d in containers keeps the packages' own services from starting;
    # start below runs the daemons itself.
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
        slurm-wlm munge > /dev/null || die "apt-get install slurm-wlm munge failed"
    have_slurm || die "slurm-wlm and munge are installed but a tool is still missing from PATH"
}

# The state dir of the cluster whose config is in /etc/slurm, or nothing.
current_state_dir() {
    [[ -f $CONF ]] || return 0
    sed -n "s|^# $MARKER; state dir: \(.*\)$|\1|p" "$CONF" | head -n 1
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2> /dev/null; }

read_pid() { [[ -f $1 ]] && tr -dc '0-9' < "$1" || true; }

port_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

munge_works() { munge -n 2> /dev/null | unmunge > /dev/null 2>&1; }

start_munge() {
    local state=$1
    if munge_works; then
        say "munged is already running; using it"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey > /dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    local run_as=()
    if id munge > /dev/null 2>&1; then
        chown munge:munge /etc/munge /etc/munge/munge.key
        mkdir -p /run/munge /var/lib/munge /var/log/munge
        chown munge:munge /run/munge /var/lib/munge /var/log/munge
        run_as=(runuser -u munge --)
    else
        mkdir -p /run/munge /var/lib/munge /var/log/munge
    fi
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if [[ ${#run_as[@]} -gt 0 ]]; then
        "${run_as[@]}" munged
    else
        munged --force
    fi
    local i
    for i in $(seq 50); do
        munge_works && break
        sleep 0.2
    done
    munge_works || die "munged did not start (see /var/log/munge/munged.log)"
    read_pid /run/munge/munged.pid > "$state/munged.started-here"
}

render() {
    local template=$1 out=$2
    sed -e "s|@MARKER@|$MARKER; state dir: $STATE_DIR|" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" \
        -e "s|@HOST@|$NODE|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEMORY_MB@|$MEMORY_MB|g" \
        -e "s|@GPUS@|$GPUS|g" \
        -e "s|@GPU_FILES@|$GPU_FILES|g" \
        "$template" > "$out"
}

# A daemon forks into the background and writes its pid file a moment later:
# wait for the file, then for the process behind it.
daemon_running() {
    local name=$1 i
    for i in $(seq 100); do
        [[ -s $STATE_DIR/$name.pid ]] && break
        sleep 0.1
    done
    pid_alive "$(read_pid "$STATE_DIR/$name.pid")"
}

wait_for_node() {
    local i state=""
    for i in $(seq 120); do
        daemon_running slurmctld || { say "slurmctld is not running"; return 1; }
        daemon_running slurmd || { say "slurmd is not running"; return 1; }
        state=$(timeout 10 sinfo -h -n "$NODE" -o %t 2> /dev/null | head -n 1 || true)
        case $state in
            idle* | mix* | alloc*) return 0 ;;
            drain* | drng* | down*)
                scontrol update nodename="$NODE" state=resume > /dev/null 2>&1 || true
                ;;
        esac
        sleep 0.5
    done
    say "node $NODE is '${state:-not registered}' after 60 s"
    return 1
}

cmd_start() {
    STATE_DIR=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --state-dir) STATE_DIR=$2; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [[ $(id -u) -eq 0 ]] || cannot "the Slurm daemons and /etc/slurm need root (running as $(id -un))"
    cmd_install

    local running
    running=$(current_state_dir)
    if [[ -n $running ]]; then
        if pid_alive "$(read_pid "$running/slurmctld.pid")" || pid_alive "$(read_pid "$running/slurmd.pid")"; then
            die "a local cluster is already running (state dir $running); stop it first: $0 stop"
        fi
        say "removing the config of a local cluster that is no longer running ($running)"
        rm -f "$CONF" "$GRES_CONF"
    fi
    [[ -e $CONF ]] && die "$CONF exists and was not written by this script: this machine has its own Slurm setup, not touching it"
    [[ -e $GRES_CONF ]] && die "$GRES_CONF exists and was not written by this script: not touching it"
    if pgrep -x slurmctld > /dev/null || pgrep -x slurmd > /dev/null; then
        die "slurmctld or slurmd is already running on this machine (not started by this script)"
    fi

    CTLD_PORT=${SLURMCTLD_PORT:-6817}
    SLURMD_PORT=${SLURMD_PORT:-6818}
    local port
    for port in "$CTLD_PORT" "$SLURMD_PORT"; do
        port_in_use "$port" && die "port $port on 127.0.0.1 is in use (set SLURMCTLD_PORT / SLURMD_PORT)"
    done

    local owned=0
    if [[ -z $STATE_DIR ]]; then
        STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/birdclef-slurm.XXXXXX")
        owned=1
    else
        mkdir -p "$STATE_DIR"
        [[ -z $(ls -A "$STATE_DIR") ]] || die "state dir $STATE_DIR is not empty"
        STATE_DIR=$(cd "$STATE_DIR" && pwd)
    fi
    chmod 0755 "$STATE_DIR"
    mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/spool" "$STATE_DIR/log" "$STATE_DIR/dev"
    echo "$owned" > "$STATE_DIR/owned-by-script"

    NODE=$(hostname -s)
    CPUS=$(nproc)
    local total_mb
    total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    MEMORY_MB=${LOCAL_SLURM_MEMORY_MB:-$((total_mb > 32000 ? total_mb : 32000))}
    local devices=()
    shopt -s nullglob
    for port in /dev/nvidia[0-9]*; do devices+=("$port"); done
    shopt -u nullglob
    if [[ ${#devices[@]} -gt 0 ]]; then
        GPUS=${#devices[@]}
        GPU_FILES=$(IFS=,; echo "${devices[*]}")
        say "declaring the $GPUS real GPU(s): $GPU_FILES"
    else
        # Slurm wants a character device; a node with /dev/null's numbers
        # (1,3) named gpu0 gives the fake GPU index 0, so jobs get
        # CUDA_VISIBLE_DEVICES=0 as on a one-GPU node.
        GPUS=1
        GPU_FILES="$STATE_DIR/dev/gpu0"
        mknod -m 0666 "$GPU_FILES" c 1 3 2> /dev/null || GPU_FILES=/dev/null
    fi

    # From here on a failed start takes down whatever it got running.
    trap 'echo 0 > "$STATE_DIR/owned-by-script"; stop_cluster; say "logs kept in $STATE_DIR/log"' EXIT
    mkdir -p "$SLURM_ETC"
    render "$HERE/slurm.conf.in" "$STATE_DIR/slurm.conf"
    render "$HERE/gres.conf.in" "$STATE_DIR/gres.conf"
    cp "$STATE_DIR/slurm.conf" "$CONF"
    cp "$STATE_DIR/gres.conf" "$GRES_CONF"
    chmod 0644 "$CONF" "$GRES_CONF"

    start_munge "$STATE_DIR"
    slurmctld -i -f "$CONF" || die "slurmctld did not start (log: $STATE_DIR/log/slurmctld.log)"
    slurmd -f "$CONF" || die "slurmd did not start (log: $STATE_DIR/log/slurmd.log)"
    if ! wait_for_node; then
        tail -n 20 "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log" >&2 || true
        die "the node did not come up"
    fi
    trap - EXIT
    say "running: node $NODE (CPUs=$CPUS, RealMemory=$MEMORY_MB MB, gpu:$GPUS), partitions cpu (default) and gpu"
    say "state dir $STATE_DIR; job completion log $STATE_DIR/log/jobcomp.log"
    echo "$STATE_DIR"
}

kill_pidfile() {
    local file=$1 pid i
    pid=$(read_pid "$file")
    pid_alive "$pid" || return 0
    kill "$pid" 2> /dev/null || true
    for i in $(seq 100); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2> /dev/null || true
}

stop_cluster() {
    local state=${STATE_DIR:-}
    [[ -n $state ]] || return 0
    if pid_alive "$(read_pid "$state/slurmctld.pid")"; then
        local jobs
        jobs=$(timeout 20 squeue -h -o %i 2> /dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            timeout 20 scancel $jobs 2> /dev/null || true
            sleep 2
        fi
    fi
    kill_pidfile "$state/slurmd.pid"
    kill_pidfile "$state/slurmctld.pid"
    # Job steps of cancelled jobs that outlived slurmd.
    local step
    for step in $(pgrep -x slurmstepd || true); do
        if grep -qs "$state" "/proc/$step/cmdline" "/proc/$step/environ" 2> /dev/null; then
            kill -9 "$step" 2> /dev/null || true
        fi
    done
    if [[ -f $state/munged.started-here ]]; then
        kill_pidfile "$state/munged.started-here"
        rm -f "$state/munged.started-here"
    fi
    if [[ $(current_state_dir) == "$state" ]]; then
        rm -f "$CONF" "$GRES_CONF"
    fi
    if [[ $(cat "$state/owned-by-script" 2> /dev/null || echo 0) == 1 ]]; then
        rm -rf "$state"
    fi
}

cmd_stop() {
    STATE_DIR=$(current_state_dir)
    if [[ -z $STATE_DIR ]]; then
        say "no local cluster is running (no $CONF written by this script)"
        return 0
    fi
    stop_cluster
    say "stopped (state dir was $STATE_DIR)"
}

cmd_status() {
    local state
    state=$(current_state_dir)
    [[ -n $state ]] || { say "no local cluster is running"; return 1; }
    say "state dir $state"
    sinfo
    squeue --states=all
}

cmd_run() {
    local start_args=()
    while [[ $# -gt 0 && $1 != "--" ]]; do
        start_args+=("$1")
        shift
    done
    [[ ${1:-} == "--" ]] && shift
    [[ $# -gt 0 ]] || die "run: nothing to run (usage: $0 run [--state-dir DIR] -- CMD...)"
    cmd_start "${start_args[@]}" > /dev/null
    trap stop_cluster EXIT
    trap 'exit 130' INT TERM
    "$@"
}

case ${1:-} in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    run) shift; cmd_run "$@" ;;
    *)
        sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
