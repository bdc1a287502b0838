#!/usr/bin/env python3
"""Drives strongSwan's charon through vici: handshakes per second.

Keeps --window initiations of one connection in flight for --warmup and then
--duration seconds (or for exactly --count handshakes). With
`unique = never`, `charon.reuse_ikesa = no` and `charon.uniqueids = no`
every initiate is a new IKE SA: IKE_SA_INIT + IKE_AUTH with the CHILD SA.

Two ways to initiate:
  async (default): `initiate` with timeout -1 returns at once; completions
    arrive as `child-updown` events on a second vici connection, and a new
    initiate goes out for each. charon spends no thread and no bus listener
    on waiting. Latency: charon numbers IKE SAs in the order it creates them,
    starting at 1 in a fresh daemon, so the k-th initiate is matched with
    IKE SA #k (close, though worker threads may swap neighbours).
  blocking: one vici connection per window slot, each with an `initiate`
    that returns when the CHILD SA is up or failed: exact latency, but each
    waiting initiate holds a charon thread and a bus listener.

Prints one line of JSON: handshakes in the window, rate, latency, the
charons' CPU time per handshake and both daemons' IKE SA counts. Exit status
0 when handshakes completed and none failed.

Only the standard library: the vici wire format (strongSwan's
src/libcharon/plugins/vici/README.md) is small enough to speak directly.
"""

import argparse
import json
import math
import os
import socket
import struct
import sys
import threading
import time

# Packet types.
CMD_REQUEST = 0
CMD_RESPONSE = 1
CMD_UNKNOWN = 2
EVENT_REGISTER = 3
EVENT_CONFIRM = 5
EVENT_UNKNOWN = 6
EVENT = 7
# Message elements.
SECTION_START = 1
SECTION_END = 2
KEY_VALUE = 3
LIST_START = 4
LIST_ITEM = 5
LIST_END = 6


def encode_message(items):
    """A flat dict of str -> str as key/value elements."""
    out = bytearray()
    for key, value in items.items():
        k = key.encode()
        v = str(value).encode()
        out += bytes([KEY_VALUE, len(k)]) + k + struct.pack("!H", len(v)) + v
    return bytes(out)


def decode_message(data):
    """Nested dicts; lists as Python lists."""
    root = {}
    stack = [root]
    i = 0
    list_name = None
    while i < len(data):
        kind = data[i]
        i += 1
        if kind in (SECTION_START, KEY_VALUE, LIST_START):
            n = data[i]
            name = data[i + 1:i + 1 + n].decode()
            i += 1 + n
        if kind == SECTION_START:
            section = {}
            stack[-1][name] = section
            stack.append(section)
        elif kind == SECTION_END:
            stack.pop()
        elif kind == KEY_VALUE:
            (n,) = struct.unpack_from("!H", data, i)
            stack[-1][name] = data[i + 2:i + 2 + n].decode(errors="replace")
            i += 2 + n
        elif kind == LIST_START:
            list_name = name
            stack[-1][name] = []
        elif kind == LIST_ITEM:
            (n,) = struct.unpack_from("!H", data, i)
            stack[-1][list_name].append(data[i + 2:i + 2 + n].decode(errors="replace"))
            i += 2 + n
        elif kind == LIST_END:
            list_name = None
        else:
            raise ValueError("bad vici element %d" % kind)
    return root


class Vici:
    """One vici connection: requests, or (after register()) events."""

    def __init__(self, path, timeout):
        # charon's listen backlog is short: a busy daemon refuses connections
        # for a moment (EAGAIN), so try again for a while.
        deadline = time.monotonic() + 10
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except BlockingIOError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.sock.settimeout(timeout)  # A daemon that stops answering ends the run.

    def close(self):
        self.sock.close()

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("vici connection closed")
            buf += chunk
        return bytes(buf)

    def _send(self, kind, name, items=None):
        n = name.encode()
        packet = bytes([kind, len(n)]) + n + encode_message(items or {})
        self.sock.sendall(struct.pack("!I", len(packet)) + packet)

    def _read_packet(self):
        (length,) = struct.unpack("!I", self._recv_exact(4))
        return self._recv_exact(length)

    def request(self, command, items=None):
        self._send(CMD_REQUEST, command, items)
        while True:
            packet = self._read_packet()
            kind = packet[0]
            if kind == CMD_RESPONSE:
                return decode_message(packet[1:])
            if kind == CMD_UNKNOWN:
                raise ValueError("vici: unknown command %s" % command)
            if kind == EVENT:
                continue  # Not for this connection's requests.
            raise ValueError("vici: unexpected packet type %d" % kind)

    def register(self, event):
        self._send(EVENT_REGISTER, event)
        packet = self._read_packet()
        if packet[0] == EVENT_UNKNOWN:
            raise ValueError("vici: unknown event %s" % event)
        if packet[0] != EVENT_CONFIRM:
            raise ValueError("vici: unexpected packet type %d" % packet[0])

    def next_event(self):
        """(name, message) of the next event."""
        while True:
            packet = self._read_packet()
            if packet[0] == EVENT:
                n = packet[1]
                return packet[2:2 + n].decode(), decode_message(packet[2 + n:])


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, p):
    """Nearest rank, as handshake_bench does."""
    rank = min(max(int(math.ceil(p * len(sorted_values))), 1), len(sorted_values))
    return sorted_values[rank - 1]


class Run:
    """What both modes share: the window's edges and the tallies."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.latencies = []
        self.failures = {}
        self.done = 0
        self.started = 0
        self.done_times = []
        now = time.monotonic()
        self.window_start = now + (0 if args.count else args.warmup)
        self.window_end = self.window_start + args.duration

    def may_start(self):
        """Whether another handshake may begin; counts it. Under the lock."""
        if self.args.count:
            if self.started >= self.args.count:
                return False
        elif time.monotonic() >= self.window_end:
            return False
        self.started += 1
        return True

    def completed(self, when, latency):
        """Under the lock."""
        if self.args.count or self.window_start <= when < self.window_end:
            self.done += 1
            self.done_times.append(when - self.window_start)
            if latency is not None:
                self.latencies.append(latency)

    def failed(self, reason, n=1):
        """Under the lock."""
        self.failures[reason] = self.failures.get(reason, 0) + n


def run_blocking(run):
    args = run.args

    def worker():
        try:
            vici = Vici(args.uri, args.timeout_ms / 1000 + 10)
        except OSError as e:
            with run.lock:
                run.failed("vici: %s" % e)
            return
        try:
            while True:
                with run.lock:
                    if not run.may_start():
                        return
                t0 = time.monotonic()
                reply = vici.request("initiate", {
                    "child": args.child, "ike": args.ike, "timeout": args.timeout_ms,
                    "init-limits": "no", "loglevel": -1})
                t1 = time.monotonic()
                with run.lock:
                    if reply.get("success") != "yes":
                        run.failed(reply.get("errmsg", "unknown"))
                    else:
                        run.completed(t1, t1 - t0)
        except (OSError, ValueError) as e:
            with run.lock:
                run.failed("vici: %s" % e)
        finally:
            vici.close()

    threads = [threading.Thread(target=worker) for _ in range(args.window)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_async(run):
    args = run.args
    timeout = args.timeout_ms / 1000
    events = Vici(args.uri, None)
    events.register("child-updown")
    events.register("ike-updown")
    command = Vici(args.uri, 10)
    cond = threading.Condition(run.lock)
    sent = []  # Send time of the k-th initiate, for IKE SA #k+1.
    state = {"in_flight": 0, "last_progress": time.monotonic(), "error": None}

    def listen():
        try:
            while True:
                name, msg = events.next_event()
                now = time.monotonic()
                for ike_name, sa in msg.items():
                    if not isinstance(sa, dict) or ike_name != args.ike:
                        continue
                    with cond:
                        if name == "child-updown" and msg.get("up") == "yes":
                            k = int(sa.get("uniqueid", "0")) - 1
                            latency = now - sent[k] if 0 <= k < len(sent) else None
                            run.completed(now, latency)
                        elif name == "ike-updown" and msg.get("up") != "yes":
                            run.failed("IKE SA down before its CHILD SA")
                        else:
                            continue
                        state["in_flight"] -= 1
                        state["last_progress"] = now
                        cond.notify_all()
        except (OSError, ValueError) as e:
            with cond:
                state["error"] = "vici events: %s" % e
                cond.notify_all()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        while True:
            with cond:
                while (state["in_flight"] >= args.window and state["error"] is None and
                       time.monotonic() - state["last_progress"] < timeout):
                    cond.wait(0.1)
                if state["error"] is not None:
                    run.failed(state["error"])
                    break
                if state["in_flight"] >= args.window:
                    run.failed("no handshake ended for %gs" % timeout, state["in_flight"])
                    state["in_flight"] = 0
                    break
                if not run.may_start():
                    break
                state["in_flight"] += 1
                sent.append(time.monotonic())
            reply = command.request("initiate", {
                "child": args.child, "ike": args.ike, "timeout": -1, "init-limits": "no",
                "loglevel": -1})
            if reply.get("success") != "yes":
                with cond:
                    run.failed(reply.get("errmsg", "initiate refused"))
                    state["in_flight"] -= 1
        # Let the last ones end, uncounted unless --count.
        deadline = time.monotonic() + timeout
        with cond:
            while state["in_flight"] > 0 and state["error"] is None:
                if time.monotonic() > deadline:
                    run.failed("not established within %gs" % timeout, state["in_flight"])
                    break
                cond.wait(0.1)
    except (OSError, ValueError) as e:
        with cond:
            run.failed("vici: %s" % e)
    finally:
        command.close()
        events.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", required=True, help="the initiator's vici socket path")
    ap.add_argument("--peer-uri", help="the responder's vici socket path (for its stats)")
    ap.add_argument("--ike", default="bench")
    ap.add_argument("--child", default="net")
    ap.add_argument("--mode", choices=("async", "blocking"), default="async")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=0,
                    help="instead of timing: run exactly this many handshakes, then stop")
    ap.add_argument("--pids", default="", help="charon pids (initiator,responder) for CPU time")
    ap.add_argument("--timeout-ms", type=int, default=30000)
    args = ap.parse_args()

    pids = [int(p) for p in args.pids.split(",") if p]
    cpu = {}

    def cpu_mark(label):
        try:
            cpu[label] = [cpu_seconds(p) for p in pids]
        except OSError:
            cpu[label] = None

    run = Run(args)

    # The CPU marks are taken by a timer thread at the window's edges, and
    # every second in between.
    cpu_series = []

    def marker():
        time.sleep(max(0.0, run.window_start - time.monotonic()))
        cpu_mark("start")
        last = cpu["start"]
        for i in range(1, int(math.ceil(args.duration)) + 1):
            time.sleep(max(0.0, min(run.window_start + i, run.window_end) - time.monotonic()))
            cpu_mark("end")
            if last and cpu["end"]:
                cpu_series.append(round(1000 * (sum(cpu["end"]) - sum(last))))
            last = cpu["end"]

    mark_thread = threading.Thread(target=marker, daemon=True)
    if args.count:
        cpu_mark("start")
    else:
        mark_thread.start()
    (run_async if args.mode == "async" else run_blocking)(run)
    if args.count:
        cpu_mark("end")
        elapsed = time.monotonic() - run.window_start
    else:
        mark_thread.join()
        elapsed = args.duration

    n = run.done
    lat = sorted(run.latencies)
    result = {
        "implementation": "strongswan",
        "mode": args.mode,
        "window": args.window,
        "warmup_s": 0 if args.count else args.warmup,
        "duration_s": round(elapsed, 3),
        "handshakes": n,
        "handshakes_per_second": round(n / elapsed, 2) if elapsed > 0 else 0,
        "latency_ms": {
            "mean": round(1000 * sum(lat) / len(lat), 3) if lat else 0,
            "p50": round(1000 * percentile(lat, 0.5), 3) if lat else 0,
            "p99": round(1000 * percentile(lat, 0.99), 3) if lat else 0,
        },
        "failures": run.failures,
        # Handshakes per second of the window: whether the rate holds as SAs
        # pile up in both daemons.
        "per_second": [sum(1 for t in run.done_times if i <= t < i + 1)
                       for i in range(int(math.ceil(elapsed)))],
        # Both charons' CPU milliseconds in each of those seconds.
        "cpu_ms_per_second": cpu_series,
    }
    if pids and cpu.get("start") and cpu.get("end") and n:
        per = [1000 * (e - s) / n for s, e in zip(cpu["start"], cpu["end"])]
        result["cpu_ms_per_handshake"] = {"initiator": round(per[0], 3)}
        if len(per) > 1:
            result["cpu_ms_per_handshake"]["responder"] = round(per[1], 3)
    ikesas = {}
    for label, uri in (("initiator", args.uri), ("responder", args.peer_uri)):
        if uri:
            vici = Vici(uri, 10)
            ikesas[label] = vici.request("stats").get("ikesas", {})
            vici.close()
    result["ikesas"] = ikesas
    print(json.dumps(result))
    return 0 if n > 0 and not run.failures else 1


if __name__ == "__main__":
    sys.exit(main())
