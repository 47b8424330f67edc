#!/usr/bin/env python3
"""Run the descriptor helpers of the Python testee skeleton in
conformance/README.md exactly as printed there.

Implementers copy that skeleton; a helper that loses CLOEXEC or dies of
SIGPIPE makes their testee fail hundreds of cases for a reason that is not
theirs.  This check takes the skeleton's code up to its request loop, runs it
in a child process with a real socket as fd 3, and asserts:

  - 300 descriptors sent by the runner's way (one byte "F", at most 253 per
    SCM_RIGHTS) arrive, in order, each close-on-exec, each the object sent;
  - 300 descriptors sent back with send_fds arrive at the runner side;
  - send_fds to a runner that has gone raises BrokenPipeError (the testee
    can report it) rather than ending the process;
  - after closing what it received, the child holds what it held before.

Exit 0 with a "skeleton: N passed, 0 failed" line, or 1 with the failure.
"""
import array
import os
import re
import socket
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "README.md")

CHILD_TAIL = textwrap.dedent(r'''
    import fcntl
    def _stat(fd):
        st = os.fstat(fd)
        return "%d:%d" % (st.st_dev, st.st_ino)
    def _held():
        return {f + "=" + os.readlink("/proc/self/fd/" + f) for f in os.listdir("/proc/self/fd")
                if os.path.exists("/proc/self/fd/" + f)}
    at_start = _held()
    n = int(sys.argv[1])
    got = recv_fds(n)
    ok = len(got) == n and all(fcntl.fcntl(f, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for f in got)
    print("received %d cloexec %s ids %s" % (len(got), "yes" if ok else "no",
                                             ",".join(_stat(f) for f in got[:3])), flush=True)
    send_fds(got)
    for f in got:
        os.close(f)
    sys.stdin.readline()          # the runner closes its end, then says go on
    try:
        send_fds([0])
        print("send after close: no error", flush=True)
    except BrokenPipeError:
        print("send after close: BrokenPipeError", flush=True)
    extra = _held() - at_start
    print("fds held at end: [%s]" % " ".join(sorted(extra)), flush=True)
''')


def skeleton():
    text = open(README, encoding="utf-8").read()
    m = re.search(r"A Python testee's skeleton.*?```python\n(.*?)```", text, re.S)
    if not m:
        sys.exit("skeleton: no Python skeleton in conformance/README.md")
    code = m.group(1)
    cut = code.find("\nheld = None")
    if cut < 0:
        sys.exit("skeleton: the skeleton has no request loop ('held = None') to stop at")
    return code[:cut + 1]


def main():
    n = 300
    runner, testee = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    code = skeleton() + CHILD_TAIL
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(n)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        close_fds=False,  # only fd 3 is inheritable: every other descriptor here is CLOEXEC
        preexec_fn=lambda: os.dup2(testee.fileno(), 3))
    testee.close()
    failures = []
    r, w = os.pipe()
    want = "%d:%d" % (os.fstat(r).st_dev, os.fstat(r).st_ino)
    for i in range(0, n, 253):  # the runner's way: one byte "F", <= 253 per message
        k = min(253, n - i)
        runner.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r] * k))])
    line = child.stdout.readline().strip()
    if line != "received %d cloexec yes ids %s" % (n, ",".join([want] * 3)):
        failures.append("recv_fds: %r (want %d descriptors of the pipe, close-on-exec)" % (line, n))
    back = []
    runner.settimeout(10)
    while len(back) < n:
        data, anc, flags, _ = runner.recvmsg(1, socket.CMSG_LEN(253 * 4), socket.MSG_CMSG_CLOEXEC)
        if not data:
            break
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
                back += a
    same = all("%d:%d" % (os.fstat(f).st_dev, os.fstat(f).st_ino) == want for f in back)
    if len(back) != n or not same:
        failures.append("send_fds: %d descriptors came back (want %d, each the pipe: %s)"
                        % (len(back), n, same))
    for f in back:
        os.close(f)
    os.close(r)
    os.close(w)
    runner.close()
    child.stdin.write("go\n")
    child.stdin.flush()
    rest = child.stdout.read()
    status = child.wait(timeout=10)
    if "send after close: BrokenPipeError" not in rest:
        failures.append("send_fds to a closed runner: %r, exit status %d (want BrokenPipeError, "
                        "not the end of the process)" % (rest.strip(), status))
    # beyond what it held before the first recv_fds
    if "fds held at end: []" not in rest:
        failures.append("the skeleton's child holds descriptors it did not close: %r" % rest)
    for f in failures:
        print("FAIL skeleton:", f)
    print("skeleton: %d passed, %d failed" % (4 - len(failures), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
