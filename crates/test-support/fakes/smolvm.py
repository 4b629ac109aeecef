"""A stand-in for `smolvm` on Linux, for `bot-bottle start --backend smolmachines`.

It is what the smolmachines backend talks to in the project's end-to-end tests (no smolvm can
be installed on the project's machines): `--version` and `machine create/start/exec/stop/
delete/ls` are parsed as smolvm's clap definitions do (an unknown flag is a usage error, exit
2), and each machine is persisted as smolvm does, a JSON record in the `vms` table of a real
SQLite state database at `$XDG_DATA_HOME/smolvm/server/smolvm.db`, which the backend reads
back with `sqlite3`. The record has the layout of the project's in-process fake
(`crates/backend/src/smolvm/fake.rs`).

The machine itself is a docker container with no network (`--network none`, what a machine
without a network device is): the `--volume`s are bind mounts, each `--mount-socket` binds the
host's Unix socket at its guest path, and `machine exec` is `docker exec` as root, whose exit
code it returns. Every docker object is named `<prefix><machine>` and labelled
`org.bot-bottle.test=true`.

Configuration, all in `$BB_FAKE_SMOLVM_DIR`:
  prefix     the docker name prefix of this instance
  version    the version `--version` answers (default 1.9.2)
  faults     one a line: drops-readonly, drops-mount-socket, default-network, loses-row,
             fail <subcommand> <message>
  calls.log  every command line, one a line (written by the stand-in)
"""

import json
import os
import sqlite3
import subprocess
import sys

DIR = os.environ["BB_FAKE_SMOLVM_DIR"]
TEST_LABEL = "org.bot-bottle.test=true"


def read(name, default=""):
    try:
        with open(os.path.join(DIR, name)) as f:
            return f.read()
    except FileNotFoundError:
        return default


PREFIX = read("prefix").strip() or "bbfake-"
VERSION = read("version").strip() or "1.9.2"
FAULTS = [line.strip() for line in read("faults").splitlines() if line.strip()]


def db_path():
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.environ["HOME"], ".local/share")
    return os.path.join(base, "smolvm/server/smolvm.db")


def db():
    path = db_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL)")
    return conn


def record(name):
    with db() as conn:
        row = conn.execute("SELECT data FROM vms WHERE name = ?", (name,)).fetchone()
    return json.loads(row[0]) if row else None


def usage(message):
    sys.stderr.write(f"error: {message}\n\nFor more information, try '--help'.\n")
    sys.exit(2)


def failure(message):
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(1)


def docker(*args, check=True):
    out = subprocess.run(["docker", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and out.returncode != 0:
        failure(f"internal error (docker {' '.join(args[:2])}): {out.stderr.strip()}")
    return out


def running(name):
    out = docker("container", "inspect", "--format", "{{.State.Running}}", PREFIX + name, check=False)
    return out.returncode == 0 and out.stdout.strip() == "true"


def create(args):
    name, cpus, mem, image = "default", 4, 8192, None
    volumes, sockets, labels = [], [], {}
    it = iter(args)
    for flag in it:
        if flag in ("--name", "-n", "--label", "--cpus", "--mem", "--image", "-I", "--from",
                    "--volume", "-v", "--mount-socket"):
            value = next(it, None)
            if value is None:
                usage(f"a value is required for '{flag}' but none was supplied")
        else:
            usage(f"unexpected argument '{flag}' found")
        if flag in ("--name", "-n"):
            name = value
        elif flag == "--label":
            if "=" not in value:
                failure(f"invalid label '{value}': expected KEY=VALUE")
            k, v = value.split("=", 1)
            labels[k] = v
        elif flag == "--cpus":
            if not value.isdigit():
                usage(f"invalid value '{value}' for '--cpus <N>'")
            cpus = int(value)
        elif flag == "--mem":
            if not value.isdigit():
                usage(f"invalid value '{value}' for '--mem <MiB>'")
            mem = int(value)
        elif flag in ("--image", "-I"):
            image = value
        elif flag == "--from":
            failure("the stand-in runs docker images only (--image)")
        elif flag in ("--volume", "-v"):
            ro = value.endswith(":ro")
            spec = value[:-3] if ro else value
            if ":" not in spec:
                failure(f"invalid volume '{value}': expected HOST:GUEST[:ro]")
            host, guest = spec.split(":", 1)
            if not os.path.isdir(host):
                failure(f"source path on host must be a directory (virtiofs limitation): {host}")
            volumes.append([host, guest, ro])
        elif flag == "--mount-socket":
            if ":" not in value:
                failure(f"mount-socket: expected HOST_PATH:GUEST_PATH, got '{value}'")
            host, guest = value.split(":", 1)
            if not guest.startswith("/"):
                failure(f"publish-socket: guest path '{guest}' must be absolute")
            sockets.append({"direction": "mount", "guest_path": guest, "host_path": host})
    if image is None:
        failure("the stand-in needs --image (a docker image)")
    if record(name) is not None:
        failure(f"machine '{name}' already exists")
    docker_args = [
        "create", "--name", PREFIX + name, "--label", TEST_LABEL, "--network", "none",
        "--cpus", str(min(cpus, os.cpu_count() or 1)), "--memory", f"{mem}m",
    ]
    for host, guest, ro in volumes:
        docker_args += ["--volume", f"{host}:{guest}" + (":ro" if ro else "")]
    for s in sockets:
        docker_args += ["--volume", f"{s['host_path']}:{s['guest_path']}"]
    docker(*docker_args, "--entrypoint", "sleep", image, "infinity")
    if "drops-readonly" in FAULTS:
        for v in volumes:
            v[2] = False
    if "drops-mount-socket" in FAULTS:
        sockets = []
    network = "default-network" in FAULTS
    data = {
        "name": name, "created_at": 1_700_000_000, "state": "created", "pid": None,
        "pid_start_time": None, "cpus": cpus, "mem": mem, "mounts": volumes, "ports": [],
        "published_sockets": sockets, "network": network, "gpu": None, "gpu_vram_mib": None,
        "rosetta": None, "restart": {"policy": "never", "max_retries": 0}, "last_exit_code": None,
        "init": [], "init_completed": False, "remote_volumes": [], "env": [],
        "workdir": None, "storage_gb": None, "overlay_gb": None, "allowed_cidrs": None,
        "image": image, "source_smolmachine": None, "entrypoint": [], "cmd": [], "labels": labels,
        "ssh_agent": False, "docker_socket": False, "dns_filter_hosts": None, "ephemeral": False,
    }
    if network:
        data["network_backend"] = "tsi"
    if "loses-row" not in FAULTS:
        with db() as conn:
            conn.execute(
                "INSERT INTO vms (name, data) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET data = excluded.data",
                (name, json.dumps(data).encode()),
            )
    print(f"Created machine: {name}")


def name_arg(args):
    name = "default"
    it = iter(args)
    for a in it:
        if a in ("--name", "-n"):
            name = next(it, None) or usage(f"a value is required for '{a}' but none was supplied")
        elif a in ("--force", "-f"):
            pass
        else:
            usage(f"unexpected argument '{a}' found")
    return name


def known(name):
    if record(name) is None:
        failure(f"machine '{name}' not found")


def main(argv):
    with open(os.path.join(DIR, "calls.log"), "a") as log:
        log.write(" ".join(argv) + "\n")
    if argv in (["--version"], ["-V"]):
        print(f"smolvm {VERSION}")
        return
    if len(argv) < 2 or argv[0] not in ("machine", "vm"):
        usage(f"unrecognized arguments {argv}")
    sub, args = argv[1], argv[2:]
    for fault in FAULTS:
        parts = fault.split(" ", 2)
        if parts[0] == "fail" and len(parts) == 3 and parts[1] == sub:
            failure(parts[2])
    if sub == "create":
        create(args)
    elif sub == "start":
        name = name_arg(args)
        known(name)
        docker("start", PREFIX + name)
        print(f"Started machine: {name}")
    elif sub == "exec":
        if "--" not in args:
            usage("the stand-in needs `--` before the command")
        split = args.index("--")
        flags, command = args[:split], args[split + 1:]
        interactive = [f for f in flags if f in ("-i", "-t")]
        name = name_arg([f for f in flags if f not in ("-i", "-t")])
        known(name)
        if not running(name):
            failure(f"machine '{name}' is not running")
        exec_flags = ["--interactive"] if "-i" in interactive else []
        exec_flags += ["--tty"] if "-t" in interactive else []
        sys.exit(subprocess.call(["docker", "exec", *exec_flags, "--user", "0:0", PREFIX + name, *command]))
    elif sub == "stop":
        name = name_arg(args)
        known(name)
        if running(name):
            docker("stop", "--time", "5", PREFIX + name)
            print(f"Stopped machine: {name}")
        else:
            print(f"Machine '{name}' is not running")
    elif sub in ("delete", "rm"):
        name = name_arg(args)
        # What the machine left runs no more, row or no row (a lost row is a known fault).
        docker("rm", "--force", PREFIX + name, check=False)
        known(name)
        with db() as conn:
            conn.execute("DELETE FROM vms WHERE name = ?", (name,))
        print(f"Deleted machine: {name}")
    elif sub in ("ls", "list"):
        if args != ["--json"]:
            usage(f"unexpected arguments {args}")
        with db() as conn:
            rows = conn.execute("SELECT name, data FROM vms ORDER BY name").fetchall()
        out = []
        for name, data in rows:
            r = json.loads(data)
            out.append({
                "name": name, "state": "running" if running(name) else "stopped",
                "cpus": r["cpus"], "memory_mib": r["mem"], "created_at": r["created_at"],
                "labels": r["labels"], "network": r["network"],
            })
        print(json.dumps(out))
    else:
        usage(f"unrecognized subcommand '{sub}'")


if __name__ == "__main__":
    main(sys.argv[1:])
