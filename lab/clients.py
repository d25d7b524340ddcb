#!/usr/bin/env python3
"""HTTP clients that do not re-resolve, run inside a lab namespace (`ip netns exec NS
python3 lab/clients.py ...`) by the address-takeover test and bench-recovery
(docs/recovery.md, "Address takeover").

  hold ADDR [PORT]
      Opens one TCP connection to ADDR:PORT, prints `connected`, and waits for a line on
      stdin; then sends a keep-alive GET / on that old connection, and one on a fresh
      connection, and prints one JSON line: {old: "answer"|"reset"|"closed"|"timeout"|
      "error: ...", old_body, fresh: "answer"|..., fresh_body}.  A connection whose peer
      died and whose address another host took over gets a reset from that host.

  keepalive ADDR PORT SECONDS [INTERVAL_S]
      A keep-alive client as wrk or a pooled HTTP client is one: one connection, a GET /
      every INTERVAL_S (default 0.05) on it; an error or no answer within 1 s closes it
      and the next request connects again, to the same address (it never re-resolves).
      A server that closes after each answer (busybox httpd) makes it connect for each.
      Prints `started` once connected and answered; reads stdin meanwhile: `after T`
      (wall-clock seconds) makes it stop at its first good answer to a request sent at
      or after T; `stop` stops it.  Stops after SECONDS anyway.  Then one JSON line:
      {first_after: time of that answer or null, ok: good answers, errors: [[time,
      what]...] (the first 50), reconnects}.
"""
import json
import select
import socket
import sys
import time

TIMEOUT_S = 1.0


def request(sock):
    """One GET / on sock; the body of a 2xx answer, or raises."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: service\r\nConnection: keep-alive\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionAbortedError("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0].split()
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    if length is None:  # no length (busybox httpd closes instead): read to the end
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    else:
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionAbortedError("closed mid-body")
            body += chunk
    if len(status) < 2 or not status[1].startswith(b"2"):
        raise ValueError(f"status {status[1:2]}")
    return body.decode(errors="replace").strip(), length is not None


def outcome(fn):
    try:
        return "answer", fn()
    except ConnectionResetError:
        return "reset", None
    except ConnectionAbortedError:
        return "closed", None
    except socket.timeout:
        return "timeout", None
    except OSError as e:
        return f"error: {e}", None


def connect(addr, port):
    return socket.create_connection((addr, port), timeout=TIMEOUT_S)


def hold(addr, port):
    old = connect(addr, port)
    print("connected", flush=True)
    sys.stdin.readline()
    res = {}
    res["old"], body = outcome(lambda: request(old)[0])
    res["old_body"] = body
    old.close()

    def fresh():
        s = connect(addr, port)
        try:
            return request(s)[0]
        finally:
            s.close()
    res["fresh"], res["fresh_body"] = outcome(fresh)
    print(json.dumps(res), flush=True)


def keepalive(addr, port, seconds, interval):
    end = time.monotonic() + seconds
    after, first_after, ok, errors, reconnects, sock, started = None, None, 0, [], 0, None, False
    while time.monotonic() < end:
        if select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                break
            if line.startswith("after "):
                after = float(line.split()[1])
        t = time.time()
        try:
            if sock is None:
                sock = connect(addr, port)
                reconnects += 1
            body, keeps = request(sock)
            ok += 1
            if not started:
                print("started", flush=True)
                started = True
            if after is not None and t >= after:
                first_after = time.time()
                break
            if not keeps:
                sock.close()
                sock = None
        except (OSError, ValueError) as e:
            if len(errors) < 50:
                errors.append([t, type(e).__name__])
            if sock is not None:
                sock.close()
            sock = None
        time.sleep(interval)
    if not started:
        print("started", flush=True)  # never answered: the caller sees it in the result
    print(json.dumps({"first_after": first_after, "ok": ok, "errors": errors,
                      "reconnects": reconnects}), flush=True)


def main(argv):
    if len(argv) >= 2 and argv[0] == "hold":
        hold(argv[1], int(argv[2]) if len(argv) > 2 else 80)
    elif len(argv) >= 4 and argv[0] == "keepalive":
        keepalive(argv[1], int(argv[2]), float(argv[3]), float(argv[4]) if len(argv) > 4 else 0.05)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
