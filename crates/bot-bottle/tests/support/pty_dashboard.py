"""Runs `bot-bottle supervise` on a pseudo-terminal like an operator would.

usage: pty_dashboard.py BINARY WAIT_FOR KEYS
Waits until WAIT_FOR appears on the screen, types KEYS one by one (pausing between them),
then waits for the dashboard to exit and writes the raw screen output to stdout.
"""

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

binary, wait_for, keys = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execv(binary, [binary, "-vv", "supervise"])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
out = b""


def pump(seconds, until=None):
    global out
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                return
        if until is not None and until in out:
            return


pump(20, wait_for)
if wait_for not in out:
    sys.stderr.write("never saw %r on the screen\n" % wait_for)
for k in keys:
    os.write(fd, bytes([k]))
    pump(0.5)
pump(5)
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
