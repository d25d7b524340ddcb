"""Hostile clients of the HTTP API and a recording proxy, for test_api_auth.py (run
inside the lab namespace).

  api_flood.py proxy LISTEN_ADDR:PORT TARGET_ADDR:PORT LOG
      forward every TCP connection to TARGET, appending the monotonic time of each
      accepted connection to LOG (one float per line): what a service sees of its probes.
  api_flood.py flood ADDR:PORT CA ATTEMPTS SLOW SECONDS
      ATTEMPTS connection attempts, 64 at a time: a third connect and close, a third send
      bytes that are not TLS, a third open a TLS handshake and drop it; meanwhile SLOW
      slowloris clients over TLS send a request's first line and then a header byte every
      0.5 s, never ending it, and reconnect when the server closes them, until SECONDS
      have passed and the attempts are done.  Prints one JSON line:
      {"attempts", "refused", "slow_opened", "slow_closed_by_server", "seconds"}.
"""
import json
import selectors
import socket
import ssl
import sys
import threading
import time


def proxy(listen, target, log):
    host, port = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)
    srv = socket.create_server((host, int(port)), reuse_port=False)
    out = open(log, "a", buffering=1)

    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        c, _ = srv.accept()
        out.write(f"{time.monotonic():.3f}\n")
        try:
            t = socket.create_connection((thost, int(tport)), timeout=5)
        except OSError:
            c.close()
            continue
        threading.Thread(target=pipe, args=(c, t), daemon=True).start()
        threading.Thread(target=pipe, args=(t, c), daemon=True).start()


def attempt(addr, i, ctx, counts):
    try:
        s = socket.create_connection(addr, timeout=5)
    except OSError:
        counts["refused"] += 1
        return
    try:
        if i % 3 == 1:
            s.sendall(b"\x16\x03\x01garbage that is no TLS record\r\n\r\n")
        elif i % 3 == 2:
            s.setblocking(False)
            t = ctx.wrap_socket(s, server_hostname=addr[0], do_handshake_on_connect=False)
            try:
                t.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, OSError):
                pass
            s = t
    except OSError:
        pass
    finally:
        s.close()


def slowloris(addr, ctx, n, stop, stats):
    sel = selectors.DefaultSelector()
    header = b"X-Slow: " + b"a" * 1000

    def opened():
        try:
            raw = socket.create_connection(addr, timeout=5)
            t = ctx.wrap_socket(raw, server_hostname=addr[0])
            t.sendall(b"GET /v1/status HTTP/1.1\r\nHost: %s\r\n" % addr[0].encode())
            t.setblocking(False)
            stats["slow_opened"] += 1
            return t
        except OSError:
            return None

    conns = {}
    for k in range(n):
        t = opened()
        if t:
            conns[k] = [t, 0]
    while not stop.is_set():
        time.sleep(0.5)
        for k in range(n):
            entry = conns.get(k)
            if entry is None:
                t = opened()
                if t:
                    conns[k] = [t, 0]
                continue
            t, sent = entry
            try:
                try:
                    if t.recv(1) == b"":
                        raise ConnectionResetError
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                t.send(header[sent % len(header):sent % len(header) + 1])
                entry[1] = sent + 1
            except (OSError, ssl.SSLError):
                stats["slow_closed_by_server"] += 1
                t.close()
                conns.pop(k, None)
    for t, _ in conns.values():
        t.close()
    sel.close()


def flood(target, ca, attempts, slow, seconds):
    host, port = target.rsplit(":", 1)
    addr = (host, int(port))
    ctx = ssl.create_default_context(cafile=ca)
    counts = {"attempts": 0, "refused": 0, "slow_opened": 0, "slow_closed_by_server": 0}
    stop = threading.Event()
    slow_t = threading.Thread(target=slowloris, args=(addr, ctx, slow, stop, counts))
    slow_t.start()
    start = time.monotonic()
    i = 0
    while i < attempts:
        batch = [threading.Thread(target=attempt, args=(addr, i + k, ctx, counts))
                 for k in range(min(64, attempts - i))]
        for t in batch:
            t.start()
        for t in batch:
            t.join()
        i += len(batch)
        counts["attempts"] = i
    while time.monotonic() - start < seconds:
        time.sleep(0.2)
    stop.set()
    slow_t.join()
    counts["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "proxy":
        proxy(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
