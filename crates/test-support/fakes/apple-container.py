"""A stand-in for Apple's `container` CLI on Linux, for `bot-bottle start --backend apple`.

It is what the apple backend talks to in the project's end-to-end tests (no Mac is available):
the arguments are parsed as Apple's Swift argument parser does (an unknown option is a usage
error, exit 64), networks and containers are kept in a state file as Apple's API server keeps
them, and `inspect`, `list` and `network inspect/list` answer with the JSON shapes the backend
reads (`configuration.mode`, `configuration.networks`, `status.networks[].ipv4Address`, the
mounts with their options).

The containers themselves run in docker: a network created `--internal` is a docker internal
network (what Apple's host-only mode promises: containers on it reach each other, nothing
beyond), a container's `--no-dns` is emulated by rejecting docker's embedded DNS server inside
it before `start` reports it running, and `start --attach` returns the container's exit code.
Every docker object is named `<prefix><apple name>` and labelled `org.bot-bottle.test=true`.

Configuration, all in the state directory `$BB_FAKE_CONTAINER_DIR`:
  prefix      the docker name prefix of this instance
  faults      one fault a line, what a `container` version or host could do wrong:
                internal-ignored      `--internal` is ignored (the network is NAT)
                adds-default-network  every container also joins the `default` network
                drops-readonly        `readonly` on `--mount` is dropped
                api-server-stopped    `system status` fails
                macos-15              user-defined networks cannot be created
                fail <key> <message>  the subcommand <key> (`run`, `network create`, …) fails
  calls.log   every command line, one a line (written by the fake)
  state.json  the networks and containers (written by the fake)
"""

import fcntl
import json
import os
import subprocess
import sys
import time

DIR = os.environ["BB_FAKE_CONTAINER_DIR"]
TEST_LABEL = "org.bot-bottle.test=true"


def read(name, default=""):
    try:
        with open(os.path.join(DIR, name)) as f:
            return f.read()
    except FileNotFoundError:
        return default


PREFIX = read("prefix").strip() or "bbfake-"
FAULTS = [line.strip() for line in read("faults").splitlines() if line.strip()]


def usage(message):
    sys.stderr.write(f"Error: {message}\nUsage: see 'container --help'\n")
    sys.exit(64)


def failure(message):
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(1)


def docker(*args, check=True, capture=True):
    out = subprocess.run(
        ["docker", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
    )
    if check and out.returncode != 0:
        failure(f"internal error (docker {' '.join(args[:2])}): {(out.stderr or '').strip()}")
    return out


class State:
    """The state file, locked for the duration of a `with` block."""

    def __enter__(self):
        self.lock = open(os.path.join(DIR, "state.lock"), "a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.data = json.loads(read("state.json", "{}") or "{}")
        self.data.setdefault("networks", {})
        self.data.setdefault("containers", {})
        return self.data

    def __exit__(self, *exc):
        if exc[0] is None:
            tmp = os.path.join(DIR, "state.json.tmp")
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
            os.replace(tmp, os.path.join(DIR, "state.json"))
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()
        return False


def snapshot():
    with State() as s:
        return json.loads(json.dumps(s))


def network_json(name, net):
    return {
        "id": name,
        "configuration": {
            "id": name,
            "mode": net["mode"],
            "labels": net["labels"],
            "plugin": "container-network-vmnet",
            "options": {},
        },
        "status": {},
    }


def docker_state(name):
    """(running, {network: (ip, prefix_len, gateway)}) of a container's docker side."""
    out = docker("container", "inspect", PREFIX + name, check=False)
    if out.returncode != 0:
        return False, {}
    info = json.loads(out.stdout)[0]
    nets = {}
    for dname, n in (info.get("NetworkSettings", {}).get("Networks") or {}).items():
        apple = "default" if dname == "bridge" else dname[len(PREFIX):]
        nets[apple] = (n.get("IPAddress", ""), n.get("IPPrefixLen", 0), n.get("Gateway", ""))
    return bool(info["State"]["Running"]), nets


def container_json(name, record):
    running, nets = docker_state(name)
    running = running and record.get("started", False)
    addresses = [
        {
            "network": net,
            "hostname": name,
            "ipv4Address": f"{ip}/{plen}",
            "ipv4Gateway": gw,
        }
        for net, (ip, plen, gw) in sorted(nets.items())
        if ip
    ]
    return {
        "id": name,
        "configuration": record["configuration"],
        "status": {
            "state": "running" if running else "stopped",
            "networks": addresses if running else [],
        },
    }


def parse_memory(v):
    digits = len(v) - len(v.lstrip("0123456789"))
    if digits == 0:
        return None
    n, unit = int(v[:digits]), v[digits:].upper()
    shifts = {"": 0, "B": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
    if unit not in shifts:
        return None
    return n << shifts[unit]


def network_create(args):
    internal, name, labels = False, None, {}
    it = iter(args)
    for a in it:
        if a == "--internal":
            internal = True
        elif a == "--label":
            kv = next(it, None)
            if kv is None or "=" not in kv:
                usage("Missing value for '--label' (key=value)")
            k, v = kv.split("=", 1)
            labels[k] = v
        elif a.startswith("-"):
            usage(f"Unknown option '{a}'")
        elif name is None:
            name = a
        else:
            usage(f"Unexpected argument '{a}'")
    if name is None:
        usage("Missing expected argument '<name>'")
    if "macos-15" in FAULTS:
        failure("user-defined networks require macOS 26 or later")
    internal = internal and "internal-ignored" not in FAULTS
    with State() as s:
        if name in s["networks"] or name == "default":
            failure(f"network {name} already exists")
        flags = ["--internal"] if internal else []
        docker("network", "create", *flags, "--label", TEST_LABEL, PREFIX + name)
        s["networks"][name] = {"mode": "hostOnly" if internal else "nat", "labels": labels}
    print(name)


def network_delete(names):
    if not names:
        usage("Missing expected argument '<network-names>'")
    errors = []
    with State() as s:
        for n in names:
            if n not in s["networks"]:
                errors.append(f"network {n} not found")
                continue
            users = [
                c
                for c, r in s["containers"].items()
                if any(x["network"] == n for x in r["configuration"]["networks"])
            ]
            if users:
                errors.append(f"network {n} has addresses in use by {', '.join(sorted(users))}")
                continue
            docker("network", "rm", PREFIX + n)
            del s["networks"][n]
            print(n)
    if errors:
        failure("; ".join(errors))


def create(args, run):
    """`container create` / `container run`: the Apple record and its docker container."""
    name, labels, networks, mounts, env = None, {}, [], [], []
    cpus, memory, uid, gid, workdir = 4, 1 << 30, 0, 0, "/"
    read_only, no_dns, interactive, tty = False, False, False, False
    cap_drop, tmpfs = [], []
    rest = []
    valued = {
        "--name", "--label", "--network", "--uid", "--gid", "--mount", "--env", "-e",
        "--cpus", "-c", "--memory", "-m", "--workdir", "-w", "--cap-drop", "--tmpfs",
    }
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("-"):
            rest = args[i:]
            break
        i += 1
        if flag in ("--detach", "-d", "--rm"):
            continue
        if flag == "--no-dns":
            no_dns = True
            continue
        if flag in ("--interactive", "-i"):
            interactive = True
            continue
        if flag in ("--tty", "-t"):
            tty = True
            continue
        if flag == "--read-only":
            read_only = True
            continue
        if flag not in valued:
            usage(f"Unknown option '{flag}'")
        if i >= len(args):
            usage(f"Missing value for '{flag}'")
        v = args[i]
        i += 1
        if flag == "--name":
            name = v
        elif flag == "--label":
            if "=" in v:
                k, val = v.split("=", 1)
                labels[k] = val
        elif flag == "--network":
            networks.append(v)
        elif flag in ("--uid", "--gid"):
            if not v.isdigit():
                usage(f"invalid value '{v}' for '{flag}'")
            if flag == "--uid":
                uid = int(v)
            else:
                gid = int(v)
        elif flag == "--mount":
            source = target = None
            ro = False
            for part in v.split(","):
                if part == "readonly":
                    ro = True
                elif part == "type=bind":
                    pass
                elif part.startswith("source="):
                    source = part[len("source="):]
                elif part.startswith("target="):
                    target = part[len("target="):]
                else:
                    failure(f"invalid mount '{v}'")
            if not source or not target:
                failure(f"invalid mount '{v}'")
            if not os.path.exists(source):
                failure(f"mount source {source} does not exist")
            if "drops-readonly" in FAULTS:
                ro = False
            mounts.append((source, target, ro))
        elif flag in ("--env", "-e"):
            # `--env NAME` takes the value from this process's environment, as Apple's does.
            if "=" in v or v in os.environ:
                env.append(v)
        elif flag in ("--cpus", "-c"):
            if not v.isdigit():
                usage(f"invalid value '{v}' for '--cpus'")
            cpus = int(v)
        elif flag in ("--memory", "-m"):
            memory = parse_memory(v)
            if memory is None:
                usage(f"invalid value '{v}' for '--memory'")
        elif flag in ("--workdir", "-w"):
            workdir = v
        elif flag == "--cap-drop":
            cap_drop.append(v)
        elif flag == "--tmpfs":
            tmpfs.append(v)
    if not rest:
        usage("Missing expected argument '<image>'")
    if name is None:
        usage("the stand-in needs --name")
    image, command = rest[0], rest[1:]
    if not networks:
        networks = ["default"]
    if "adds-default-network" in FAULTS and "default" not in networks:
        networks.append("default")
    with State() as s:
        if name in s["containers"]:
            failure(f"container {name} already exists")
        for n in networks:
            if n != "default" and n not in s["networks"]:
                failure(f"network {n} not found")
        dnets = ["bridge" if n == "default" else PREFIX + n for n in networks]
        cmd = [
            "create", "--name", PREFIX + name, "--label", TEST_LABEL,
            "--network", dnets[0], "--user", f"{uid}:{gid}",
            # Apple gives a VM its CPUs; docker cannot give more than the host has.
            "--cpus", str(min(cpus, os.cpu_count() or 1)), "--memory", f"{memory}b",
            "--workdir", workdir,
        ]
        for k, v in labels.items():
            cmd += ["--label", f"{k}={v}"]
        for source, target, ro in mounts:
            cmd += ["--mount", f"type=bind,source={source},target={target}" + (",readonly" if ro else "")]
        for e in env:
            cmd += ["--env", e]
        for c in cap_drop:
            cmd += ["--cap-drop", c]
        for t in tmpfs:
            cmd += ["--tmpfs", t]
        if read_only:
            cmd.append("--read-only")
        if interactive:
            cmd.append("--interactive")
        if tty:
            cmd.append("--tty")
        cmd += [image, *command]
        docker(*cmd)
        for extra in dnets[1:]:
            docker("network", "connect", extra, PREFIX + name)
        s["containers"][name] = {
            "image": image,
            "no_dns": no_dns,
            "started": False,
            "configuration": {
                "id": name,
                "image": {"reference": image},
                "mounts": [
                    {"type": {"virtiofs": {}}, "source": src, "destination": dst, "options": ["ro"] if ro else []}
                    for src, dst, ro in mounts
                ]
                + [{"type": {"tmpfs": {}}, "source": "", "destination": t, "options": []} for t in tmpfs],
                "publishedPorts": [],
                "publishedSockets": [],
                "labels": labels,
                "networks": [{"network": n, "options": {"hostname": name}} for n in networks],
                "rosetta": False,
                "ssh": False,
                "virtualization": False,
                "readOnly": read_only,
                "capDrop": cap_drop,
                "capAdd": [],
                "dns": None if no_dns else {"nameservers": []},
                "resources": {"cpus": cpus, "memoryInBytes": memory},
                "initProcess": {
                    "executable": command[0] if command else None,
                    "arguments": command[1:],
                    # Names only: the values stay out of the state file.
                    "environment": [e.split("=", 1)[0] for e in env],
                    "workingDirectory": workdir,
                    "user": {"id": {"uid": uid, "gid": gid}},
                    "terminal": tty,
                },
            },
        }
    if run:
        docker("start", PREFIX + name)
        booted(name)
    print(name)


def close_dns(name, image):
    """`--no-dns`: docker's embedded DNS server must not answer inside the container."""
    out = docker(
        "run", "--rm", "--network", f"container:{PREFIX}{name}", "--user", "0:0",
        "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
        "--label", TEST_LABEL, "--entrypoint", "iptables", image,
        "-w", "-I", "OUTPUT", "-d", "127.0.0.11/32", "-j", "REJECT",
        check=False,
    )
    return out.returncode == 0, (out.stderr or "").strip()


def booted(name):
    """Marks a started container running, once what Apple would have set up is in place."""
    with State() as s:
        record = s["containers"].get(name)
        if record is None:
            return
        if record["no_dns"]:
            ok, why = close_dns(name, record["image"])
            if not ok:
                docker("kill", PREFIX + name, check=False)
                failure(f"the stand-in could not emulate --no-dns: {why}")
        record["started"] = True


def start(args):
    attach = interactive = False
    names = []
    for a in args:
        if a in ("--attach", "-a"):
            attach = True
        elif a in ("--interactive", "-i"):
            interactive = True
        elif a.startswith("-"):
            usage(f"Unknown option '{a}'")
        else:
            names.append(a)
    if len(names) != 1:
        usage("Expected exactly one '<container-id>'")
    name = names[0]
    if name not in snapshot()["containers"]:
        failure(f"container {name} not found")
    if not attach:
        docker("start", PREFIX + name)
        booted(name)
        print(name)
        return
    flags = ["--interactive"] if interactive else []
    child = subprocess.Popen(["docker", "start", "--attach", *flags, PREFIX + name])
    deadline = time.time() + 60
    while child.poll() is None and time.time() < deadline:
        if docker_state(name)[0]:
            booted(name)
            break
        time.sleep(0.1)
    sys.exit(child.wait())


def kill(args):
    signal, names = "SIGKILL", []
    it = iter(args)
    for a in it:
        if a in ("--signal", "-s"):
            signal = next(it, None) or usage("Missing value for '--signal'")
        elif a.startswith("-"):
            usage(f"Unknown option '{a}'")
        else:
            names.append(a)
    if not names:
        usage("Missing expected argument '<container-ids>'")
    s = snapshot()
    for n in names:
        record = s["containers"].get(n)
        if record is None:
            failure(f"container {n} not found")
        if not (record.get("started") and docker_state(n)[0]):
            failure(f"container {n} is not running")
        docker("kill", "--signal", signal, PREFIX + n)
        print(n)


def stop(args):
    time_s, names = "5", []
    it = iter(args)
    for a in it:
        if a in ("--time", "-t"):
            time_s = next(it, None) or usage("Missing value for '--time'")
        elif a.startswith("-"):
            usage(f"Unknown option '{a}'")
        else:
            names.append(a)
    if not names:
        usage("Missing expected argument '<container-ids>'")
    for n in names:
        if n not in snapshot()["containers"]:
            failure(f"container {n} not found")
        docker("stop", "--time", time_s, PREFIX + n)
        print(n)


def delete(args):
    force = False
    names = []
    for a in args:
        if a in ("--force", "-f"):
            force = True
        elif a.startswith("-"):
            usage(f"Unknown option '{a}'")
        else:
            names.append(a)
    if not names:
        usage("Missing expected argument '<container-ids>'")
    errors = []
    with State() as s:
        for n in names:
            if n not in s["containers"]:
                errors.append(f"container {n} not found")
                continue
            if docker_state(n)[0] and not force:
                errors.append(f"container {n} is running; stop it first or use --force")
                continue
            docker("rm", "--force", PREFIX + n, check=False)
            del s["containers"][n]
            print(n)
    if errors:
        failure("; ".join(errors))


def main(argv):
    with open(os.path.join(DIR, "calls.log"), "a") as log:
        log.write(" ".join(argv) + "\n")
    if not argv:
        usage("missing subcommand")
    key = f"{argv[0]} {argv[1]}" if argv[0] in ("network", "system", "image") and len(argv) > 1 else argv[0]
    for fault in FAULTS:
        parts = fault.split(" ", 2)
        if parts[0] == "fail" and len(parts) == 3 and parts[1].replace("_", " ") == key:
            failure(parts[2])
    sub, args = argv[0], argv[1:]
    if argv == ["system", "status"]:
        if "api-server-stopped" in FAULTS:
            failure("apiserver is not running and not registered with launchd")
        print("apiserver is running")
    elif sub == "network" and args[:1] == ["create"]:
        network_create(args[1:])
    elif sub == "network" and args[:1] == ["inspect"]:
        if len(args) < 2:
            usage("Missing expected argument '<networks>'")
        s = snapshot()
        found = []
        for n in args[1:]:
            if n not in s["networks"]:
                failure(f"network {n} not found")
            found.append(network_json(n, s["networks"][n]))
        print(json.dumps(found))
    elif sub == "network" and args[:1] in (["list"], ["ls"]):
        if args[1:] != ["--format", "json"]:
            usage(f"the stand-in answers only `network list --format json`, not {args[1:]}")
        s = snapshot()
        default = {"mode": "nat", "labels": {}}
        print(json.dumps([network_json("default", default)] + [network_json(n, r) for n, r in sorted(s["networks"].items())]))
    elif sub == "network" and args[:1] in (["delete"], ["rm"]):
        network_delete(args[1:])
    elif sub in ("run", "create"):
        create(args, sub == "run")
    elif sub == "start":
        start(args)
    elif sub == "kill":
        kill(args)
    elif sub == "stop":
        stop(args)
    elif sub in ("delete", "rm"):
        delete(args)
    elif sub == "logs":
        if len(args) != 1 or args[0].startswith("-"):
            usage("the stand-in answers only `logs <container-id>`")
        if args[0] not in snapshot()["containers"]:
            failure(f"container {args[0]} not found")
        out = docker("logs", PREFIX + args[0])
        sys.stdout.write(out.stdout)
        sys.stdout.write(out.stderr)
    elif sub == "inspect":
        if not args:
            usage("Missing expected argument '<container-ids>'")
        s = snapshot()
        found = []
        for n in args:
            if n not in s["containers"]:
                failure(f"container {n} not found")
            found.append(container_json(n, s["containers"][n]))
        print(json.dumps(found))
    elif sub in ("list", "ls"):
        if args != ["--all", "--format", "json"]:
            usage(f"the stand-in answers only `list --all --format json`, not {args}")
        s = snapshot()
        print(json.dumps([container_json(n, r) for n, r in sorted(s["containers"].items())]))
    elif sub == "image" and args[:1] == ["inspect"] and len(args) == 2:
        out = docker("image", "inspect", args[1], check=False)
        if out.returncode != 0:
            failure(f"image {args[1]} not found")
        print(json.dumps([{"name": args[1]}]))
    elif sub == "build":
        build(args)
    else:
        usage(f"unknown command {argv}")


def build(args):
    file = tag = None
    build_args = []
    context = None
    it = iter(args)
    for a in it:
        if a in ("--file", "-f"):
            file = next(it, None)
        elif a in ("--tag", "-t"):
            tag = next(it, None)
        elif a == "--build-arg":
            build_args += ["--build-arg", next(it, "")]
        elif a.startswith("-"):
            usage(f"Unknown option '{a}'")
        else:
            context = a
    if not tag or not context or not os.path.isdir(context):
        usage("build needs --tag and an existing context directory")
    cmd = ["docker", "build", "--tag", tag, *build_args]
    if file:
        cmd += ["--file", file]
    out = subprocess.run(cmd + [context], stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
    sys.exit(out.returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
