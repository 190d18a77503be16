#!/usr/bin/env python3
"""Helpers for tests/bench/smtp.sh, relay.sh and pop3.sh (Python standard
library only, Linux /proc).

  bench_helper.py freeport                 print a free TCP port on 127.0.0.1
  bench_helper.py tree PID                 print PID and all its descendants
  bench_helper.py cpu PID                  CPU seconds of the process tree at PID:
                                           sum over the live tree of
                                           utime+stime+cutime+cstime, so the delta
                                           of two readings also covers children
                                           that exited (and were reaped) between them
  bench_helper.py pss PID                  PSS of the process tree at PID, in KiB
  bench_helper.py idle PORT N PID [HOLD]   open N SMTP sessions to 127.0.0.1:PORT,
                                           read the greeting, EHLO, read the reply,
                                           keep them open; print PSS (KiB) of the
                                           tree at PID before and after, then close
  bench_helper.py queue QDIR               number of messages in a Postfix queue
                                           (incoming, active, deferred, maildrop, hold)
  bench_helper.py waitqueue QDIR TIMEOUT   wait (bounded) until that queue is empty;
                                           exit 1 if it is not empty in time
  bench_helper.py count DIR                number of regular files below DIR
  bench_helper.py sinkcount FILE           messages an `smtp-sink -c` has received, from
                                           its stdout FILE (the last "mesg=N")
  bench_helper.py waitsink FILE N TIMEOUT  wait (bounded) until that count is >= N; print
                                           "count epoch_seconds" of the moment it was
                                           seen (polled every 10 ms); exit 1 if not in time
  bench_helper.py prqueue DB               "pending failed" recipients in postroomd's
                                           outbound queue (store.db, opened read-only)
  bench_helper.py waitprqueue DB TIMEOUT   wait (bounded) until none is pending there;
                                           exit 1 if some still are in time
  bench_helper.py busy                     CPU seconds the whole machine has been busy
                                           (user+nice+system+irq+softirq, /proc/stat)
  bench_helper.py run OUT TIMEOUT CMD...   run CMD (killed after TIMEOUT s); write
                                           "exit_code wall_s cpu_s" of CMD to OUT
  bench_helper.py strace FILE              "fsync fdatasync other" call counts from
                                           an `strace -c` summary
  bench_helper.py genmsgs DIR N SIZE       write N distinct messages of exactly SIZE
                                           bytes (CRLF lines, headers + body, one body
                                           line starting with "." to exercise dot
                                           stuffing) as DIR/0000.eml ...; deterministic
  bench_helper.py maildir PORT USERFMT PASSFMT SRC BASE BOXES N UID GID [crlf]
                                           fetch every message of mailboxes 0..BOXES-1
                                           over POP3 from 127.0.0.1:PORT (postroomd), check
                                           that message i ends with SRC/<i>.eml, and write
                                           them into BASE/u<box>/Maildir/cur as Dovecot's
                                           own delivery would (LF line ends,
                                           ",S=physical,W=virtual" in the name, ":2,"),
                                           owned by UID:GID; with "crlf": CRLF files, as
                                           with mail_save_crlf = yes
"""
import os
import poplib
import resource
import signal
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"  # the only address this benchmark ever talks to


def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("ascii", "replace")
    return data[data.rindex(")") + 2:].split()


def all_parents():
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            parents[int(name)] = int(stat_fields(name)[1])
        except (OSError, ValueError, IndexError):
            pass  # exited while we looked
    return parents


def tree(root):
    parents = all_parents()
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, pending = [], [root]
    while pending:
        pid = pending.pop()
        out.append(pid)
        pending.extend(children.get(pid, []))
    return out


def cpu_seconds(root):
    total = 0
    for pid in tree(root):
        try:
            f = stat_fields(pid)
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14..17 of stat (1-based),
        # i.e. 11..14 here (we dropped pid and comm).
        total += sum(int(x) for x in f[11:15])
    return total / CLK_TCK


def pss_kib(root):
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def read_reply(sock, buf, deadline):
    """Read one (possibly multi-line) SMTP reply; return (code, rest_of_buffer)."""
    while True:
        while b"\r\n" in buf or b"\n" in buf:
            sep = b"\r\n" if b"\r\n" in buf else b"\n"
            line, buf = buf.split(sep, 1)
            if len(line) >= 4 and line[3:4] == b"-":
                continue
            return line[:3].decode("ascii", "replace"), buf
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no SMTP reply in time")
        sock.settimeout(left)
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("connection closed by the server")
        buf += data


def idle(port, n, pid, hold):
    time.sleep(1.0)
    before = pss_kib(pid)
    socks, problems = [], []
    deadline = time.monotonic() + 60  # bounded: the whole setup within 60 s
    for i in range(n):
        try:
            s = socket.create_connection((LOOPBACK, port), timeout=10)
            code, buf = read_reply(s, b"", deadline)
            if code != "220":
                problems.append(f"session {i}: greeting {code}")
            s.sendall(b"EHLO x\r\n")
            code, buf = read_reply(s, buf, deadline)
            if code != "250":
                problems.append(f"session {i}: EHLO reply {code}")
            socks.append(s)
        except (OSError, TimeoutError, ConnectionError) as e:
            problems.append(f"session {i}: {e}")
    time.sleep(hold)  # let the server settle (lazy allocations, spawned processes)
    after = pss_kib(pid)
    for s in socks:
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        s.close()
    print(f"{before} {after} {len(socks)} {len(problems)}")
    for p in problems[:10]:
        print(f"problem: {p}", file=sys.stderr)


def queue_count(qdir):
    n = 0
    for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
        for _dirpath, _dirs, files in os.walk(os.path.join(qdir, sub)):
            n += len(files)
    return n


def file_count(d):
    n = 0
    for dirpath, _dirs, files in os.walk(d):
        n += sum(1 for f in files if os.path.isfile(os.path.join(dirpath, f)))
    return n


def sink_count(path):
    """The last "mesg=N" that smtp-sink -c wrote (counters end in CR)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256))
            tail = f.read()
    except OSError:
        return 0
    i = tail.rfind(b"mesg=")
    if i < 0:
        return 0
    digits = tail[i + 5:].split(b"\r", 1)[0].split(b"\n", 1)[0]
    return int(digits) if digits.isdigit() else 0


def wait_sink(path, n, timeout):
    deadline = time.monotonic() + timeout
    while True:
        c = sink_count(path)
        if c >= n:
            print(f"{c} {time.time():.3f}")
            return
        if time.monotonic() > deadline:
            print(f"{c} {time.time():.3f}")
            sys.exit(1)
        time.sleep(0.01)


def pr_queue(db):
    """(pending, failed) recipients in postroomd's outbound queue."""
    import sqlite3
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = dict(con.execute("SELECT state, count(*) FROM queue_rcpts GROUP BY state"))
    finally:
        con.close()
    return rows.get(0, 0), rows.get(2, 0)


def strace_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            # rows: % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1].isidentifier():
                try:
                    counts[parts[-1]] = int(parts[3])
                except ValueError:
                    pass
    fs, fds = counts.pop("fsync", 0), counts.pop("fdatasync", 0)
    other = ",".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "total") or "-"
    print(f"{fs} {fds} {other}")


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = v
    return (user + nice + system + irq + softirq) / CLK_TCK


def run_timed(out, timeout, cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # survives exec (launchers)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd)

    def stop(_sig, _frame):  # the benchmark is being stopped: stop the client too
        p.kill()
        p.wait()
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = 124
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as f:
        cpu = ru.ru_utime + ru.ru_stime - r0.ru_utime - r0.ru_stime
        f.write(f"{rc} {wall:.3f} {cpu:.2f}\n")


WORDS = ("school teacher student class lesson homework timetable report term "
         "exam grade parents meeting library science history geography maths "
         "music sport trip form office staff reminder please thanks week monday "
         "tuesday wednesday thursday friday notes chapter page room bus lunch").split()


def gen_messages(d, n, size):
    """n distinct messages of exactly size bytes, CRLF line ends, ASCII."""
    import random
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        rnd = random.Random(1000003 * i + 7)
        head = (f"From: Bench Sender <sender@example.net>\r\n"
                f"To: Bench Users <users@example.test>\r\n"
                f"Subject: POP3 benchmark message {i:04d}\r\n"
                f"Date: Mon, 3 Nov 2025 {8 + i // 3600 % 10:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000\r\n"
                f"Message-ID: <pop3bench.{i:04d}@bench.example.test>\r\n"
                f"MIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=us-ascii\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n"
                f"\r\n").encode()
        lines, total, dotted = [], len(head), False
        while True:
            words, ln = [], 0
            while ln < 60:
                w = rnd.choice(WORDS)
                words.append(w)
                ln += len(w) + 1
            line = " ".join(words)
            if not dotted and len(lines) == 5:
                line = "." + line  # sent as ".." on the wire (RFC 5321 4.5.2, RFC 1939 3)
                dotted = True
            b = line.encode() + b"\r\n"
            if total + len(b) + 80 > size:
                break
            lines.append(b)
            total += len(b)
        pad = size - total - 2  # the last line fills the message to exactly size bytes
        last = (f"end of message {i:04d} " + "x" * size)[:pad]
        lines.append(last.encode() + b"\r\n")
        data = head + b"".join(lines)
        assert len(data) == size, (i, len(data))
        with open(os.path.join(d, f"{i:04d}.eml"), "wb") as f:
            f.write(data)


def fetch_mailbox(port, user, password, originals, md, b, t0, keep_crlf):
    pop = poplib.POP3(LOOPBACK, port, timeout=60)
    pop.user(user)
    pop.pass_(password)
    count, _size = pop.stat()
    if count != len(originals):
        sys.exit(f"maildir: {user} has {count} messages, expected {len(originals)}")
    for i, orig in enumerate(originals):
        _resp, lines, _octets = pop.retr(i + 1)  # lines: unstuffed, without CRLF
        crlf = b"\r\n".join(lines) + b"\r\n"
        prefix = crlf[:len(crlf) - len(orig)]
        if not crlf.endswith(orig) or (prefix and not prefix.endswith(b"\r\n")):
            sys.exit(f"maildir: {user}, message {i + 1} is not header lines + {i:04d}.eml")
        lf = crlf if keep_crlf else crlf.replace(b"\r\n", b"\n")
        name = f"{t0 + i}.M{i}P{b}.bench,S={len(lf)},W={len(crlf)}:2,"
        with open(os.path.join(md, "cur", name), "wb") as f:
            f.write(lf)
    pop.quit()


def fill_maildirs(port, userfmt, passfmt, src, base, boxes, n, uid, gid, keep_crlf=False):
    """Dovecot's copy of each mailbox is exactly what postroomd serves for it
    (the generated message plus the Return-Path and Received that postroomd
    prepended on delivery), so both servers send the same octets. Written as
    Dovecot's own delivery would (mail_save_crlf = no): LF line ends, the
    physical and the virtual (CRLF) size in the file name, so LIST needs no
    file reads; already in cur/ with no flags."""
    originals = []
    for i in range(n):
        with open(os.path.join(src, f"{i:04d}.eml"), "rb") as f:
            originals.append(f.read())
    t0 = 1762156800  # 2025-11-03: fixed, so names sort in message order
    for b in range(boxes):
        md = os.path.join(base, f"u{b}", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        try:
            fetch_mailbox(port, userfmt % b, passfmt % b, originals, md, b, t0, keep_crlf)
        except (poplib.error_proto, OSError) as e:
            sys.exit(f"maildir: mailbox {b}: {e}")
    for dirpath, dirs, files in os.walk(base):
        os.chown(dirpath, uid, gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), uid, gid)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "freeport":
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            print(s.getsockname()[1])
    elif cmd == "tree":
        print(" ".join(str(p) for p in tree(int(args[0]))))
    elif cmd == "cpu":
        print(f"{cpu_seconds(int(args[0])):.2f}")
    elif cmd == "pss":
        print(pss_kib(int(args[0])))
    elif cmd == "idle":
        idle(int(args[0]), int(args[1]), int(args[2]), float(args[3]) if len(args) > 3 else 2.0)
    elif cmd == "queue":
        print(queue_count(args[0]))
    elif cmd == "waitqueue":
        deadline = time.monotonic() + float(args[1])
        while queue_count(args[0]) != 0:
            if time.monotonic() > deadline:
                sys.exit(1)
            time.sleep(0.1)
    elif cmd == "count":
        print(file_count(args[0]))
    elif cmd == "sinkcount":
        print(sink_count(args[0]))
    elif cmd == "waitsink":
        wait_sink(args[0], int(args[1]), float(args[2]))
    elif cmd == "prqueue":
        print("%d %d" % pr_queue(args[0]))
    elif cmd == "waitprqueue":
        deadline = time.monotonic() + float(args[1])
        while pr_queue(args[0])[0] != 0:
            if time.monotonic() > deadline:
                sys.exit(1)
            time.sleep(0.1)
    elif cmd == "busy":
        print(f"{machine_busy():.2f}")
    elif cmd == "run":
        run_timed(args[0], float(args[1]), args[2:])
    elif cmd == "strace":
        strace_counts(args[0])
    elif cmd == "genmsgs":
        gen_messages(args[0], int(args[1]), int(args[2]))
    elif cmd == "maildir":
        fill_maildirs(int(args[0]), args[1], args[2], args[3], args[4], int(args[5]), int(args[6]),
                      int(args[7]), int(args[8]), len(args) > 9 and args[9] == "crlf")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
