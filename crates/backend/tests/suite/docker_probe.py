# Runs inside a docker bottle (or a control container) and reports what it can see and reach,
# as one JSON object on stdout. Usage: probe.py EXIT_CODE [CHECK ...] where a CHECK is
#   tcp:NAME:HOST:PORT     connect and read one line
#   end:NAME:HOST:PORT     connect and read until the end of stream (20 times)
#   half_close:NAME:HOST:PORT  connect, send `request` and half-close, read until the end
#                          of stream (20 times)
#   dns:NAME:SERVER:QNAME  one UDP DNS query for QNAME (type A) to SERVER:53
#   read:NAME:PATH:-       the file's content
#   write:NAME:PATH:-      whether the file can be opened for writing
# HOST may be `gateway`: the host's address on the container's network.
import json
import os
import socket
import struct
import sys


def tcp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        data = s.recv(200).decode(errors="replace").strip()
        return "connected: " + data
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error: " + (e.strerror or type(e).__name__)
    finally:
        s.close()


def until_end(host, port, send):
    """What the server sent before its end of stream, after sending `send` (if any) and
    half-closing; each of 20 connections must get the same, and its end within 10 s."""
    answers = set()
    for _ in range(20):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        got = b""
        try:
            s.connect((host, int(port)))
            if send:
                s.sendall(send)
                s.shutdown(socket.SHUT_WR)
            while True:
                data = s.recv(4096)
                if not data:
                    break
                got += data
            answers.add("answer then end: " + got.decode(errors="replace").strip())
        except socket.timeout:
            return "no end within 10 s after: " + got.decode(errors="replace").strip()
        except OSError as e:
            return "error: " + (e.strerror or type(e).__name__)
        finally:
            s.close()
    return " | ".join(sorted(answers))


def dns(server, qname):
    query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    for label in qname.rstrip(".").split("."):
        query += bytes([len(label)]) + label.encode()
    query += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.connect((server, 53))
        s.send(query)
        reply = s.recv(512)
        if reply[:2] != b"\x42\x42":
            return "garbage"
        answers = struct.unpack(">H", reply[6:8])[0]
        if answers == 0:
            return "answer: none (rcode %d)" % (reply[3] & 0x0F)
        # The last 4 bytes of a single A answer are the address.
        return "answer: " + ".".join(str(b) for b in reply[-4:])
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error: " + (e.strerror or type(e).__name__)
    finally:
        s.close()


def gateway():
    """The internal network's gateway (the host's bridge address): first address of eth0's
    subnet (internal networks have no default route to read it from)."""
    for line in open("/proc/net/route").readlines()[1:]:
        fields = line.split()
        if fields[0] == "eth0" and int(fields[7], 16) != 0:
            # The kernel prints the address's bytes as a number in host order
            # (little-endian here): packed back the same way, they are in network order.
            net = struct.unpack(">I", struct.pack("<I", int(fields[1], 16)))[0]
            return socket.inet_ntoa(struct.pack(">I", net + 1))
    # No guess: 0.0.0.0 would connect to loopback, where nothing listens, and a "refused"
    # from there would pass a check that never reached the gateway.
    return None


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split()[1]
    return None


def writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return True
    except OSError:
        return False


def first_of(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return None


report = {
    "pids_max": first_of("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memory_max": first_of("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "uid": os.getuid(),
    "gid": os.getgid(),
    "cap_eff": status("CapEff"),
    "cap_bnd": status("CapBnd"),
    "no_new_privs": status("NoNewPrivs"),
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "root_writable": writable("/probe-root-write"),
    "tmp_writable": writable("/tmp/probe-write"),
    "cwd_writable": writable("probe-cwd-write"),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "checks": {},
}
for check in sys.argv[2:]:
    kind, name, a, b = check.split(":", 3)
    if a == "gateway":
        a = gateway()
        report["gateway"] = a
        if a is None:
            report["checks"][name] = "probe error: eth0 has no route to its subnet, no gateway to probe"
            continue
    if kind == "tcp":
        report["checks"][name] = tcp(a, b)
    elif kind == "end":
        report["checks"][name] = until_end(a, b, None)
    elif kind == "half_close":
        report["checks"][name] = until_end(a, b, b"request")
    elif kind == "dns":
        report["checks"][name] = dns(a, b)
    elif kind == "read":
        try:
            report["checks"][name] = open(a).read()
        except OSError as e:
            report["checks"][name] = "error: " + e.strerror
    else:
        try:
            open(a, "a").close()
            report["checks"][name] = "writable"
        except OSError as e:
            report["checks"][name] = "error: " + e.strerror
print(json.dumps(report, sort_keys=True))
sys.stdout.flush()
sys.exit(int(sys.argv[1]))
