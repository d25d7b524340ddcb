"""A forged peer of the agent link, for test_mtls.py and test_migration.py (run inside
the lab namespace).

  link_peer.py hello ADDR:PORT HOST VM [--cert C --key K] [--ca CA] [--role ROLE]
      connect as an agent (TLS with the given client certificate, or plain TCP
      without --cert and --ca), say hello as HOST with VM crashed, and print one
      JSON line: {"stage": "connect"|"handshake"|"answered"|"closed", "frames": [...],
      "error": ...}.
  link_peer.py server ADDR:PORT SECONDS [--cert C --key K]
      be a server (TLS with the given certificate, or plain TCP): to every
      connection send an order to stop VM web1 and welcome, then echo heartbeats,
      and at the end print one JSON line: {"connections": n, "handshakes_ok": n,
      "frames": [frames received from agents], "errors": [...]}.
  link_peer.py source ADDR:PORT HOST CT CT_ADDR SECONDS --pre F --final F --cert C --key K
      be a standby agent (a compromised standby VM) holding container CT (running, at
      CT_ADDR) whose migration archives are the files F: container_checkpoint is answered
      with the file's size and SHA-256, container_image_read with its bytes, any other
      order with ok; heartbeats every 0.5 s.  Ends after SECONDS or at EOF, printing
      {"orders": [actions received], "error": ...}.  stream_send (docs/migration.md,
      "The stream") is refused as an unknown order (code invalid, an agent without the
      stream: the server copies in chunks), or with `--stream wrong-token` done with a
      token one bit off the order's: the target's one-byte verdict is reported as
      `stream_status` (1: token refused) and the order refused.
"""
import base64
import hashlib
import json
import signal
import socket
import ssl
import struct
import sys
import threading
import time


def frame(obj):
    data = json.dumps(dict(obj, v=1)).encode()
    return struct.pack(">I", len(data)) + data


def read_frames(sock, deadline):
    """Frames until EOF, an error or the deadline."""
    buf, out = b"", []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except (ssl.SSLError, OSError) as e:
            out.append({"recv_error": str(e)})
            break
        if not chunk:
            out.append({"eof": True})
            break
        buf += chunk
        while len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if n == 0 or n > 256 * 1024:
                out.append({"bad_length": n})
                return out
            if len(buf) < 4 + n:
                break
            try:
                out.append(json.loads(buf[4:4 + n]))
            except ValueError:
                out.append({"not_json": True})
            buf = buf[4 + n:]
    return out


def opts(argv):
    o = {}
    for i in range(0, len(argv), 2):
        o[argv[i].lstrip("-")] = argv[i + 1]
    return o


def hello(addr, host, vm, o):
    h, p = addr.rsplit(":", 1)
    result = {"stage": "connect", "frames": [], "error": None}
    try:
        raw = socket.create_connection((h, int(p)), timeout=5)
    except OSError as e:
        result["error"] = str(e)
        return result
    sock = raw
    if "cert" in o or "ca" in o:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a forger does not care who the server is
        if "cert" in o:
            ctx.load_cert_chain(o["cert"], o["key"])
        try:
            sock = ctx.wrap_socket(raw)
        except (ssl.SSLError, OSError) as e:
            result["stage"], result["error"] = "handshake", str(e)
            return result
    result["stage"] = "handshake"
    msg = {"type": "hello", "host": host, "role": o.get("role", "host"), "agent_version": "forged",
           "pid": 4242, "accel": "tcg",
           "vms": [{"name": vm, "state": "crashed", "cause": "forged hello"}]}
    try:
        sock.sendall(frame(msg))
    except (ssl.SSLError, OSError) as e:
        result["error"] = str(e)
        return result
    result["frames"] = [f for f in read_frames(sock, time.monotonic() + 3) if "eof" not in f]
    result["stage"] = "answered" if result["frames"] else "closed"
    sock.close()
    return result


def serve(addr, seconds, o):
    h, p = addr.rsplit(":", 1)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((h, int(p)))
    ls.listen(16)
    ctx = None
    if "cert" in o:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(o["cert"], o["key"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(o["cert"])
    report = {"connections": 0, "handshakes_ok": 0, "frames": [], "errors": []}
    lock = threading.Lock()

    def handle(conn):
        sock = conn
        if ctx:
            try:
                sock = ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                with lock:
                    report["errors"].append(f"handshake: {e}")
                return
            with lock:
                report["handshakes_ok"] += 1
        try:
            # The order comes first: today's agent ran orders before any check.
            sock.sendall(frame({"type": "order", "id": 1, "action": "stop", "vm": "web1"}))
            sock.sendall(frame({"type": "welcome", "heartbeat_ms": 200, "fence_after_ms": 600000,
                                "server_version": "fake"}))
            # Echo every heartbeat, as a server does: contact the agent would count.
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                got = read_frames(sock, min(deadline, time.monotonic() + 0.2))
                with lock:
                    report["frames"] += [f for f in got if "eof" not in f]
                for f in got:
                    if f.get("type") == "heartbeat":
                        sock.sendall(frame({"type": "heartbeat", "seq": f.get("seq")}))
                    if "recv_error" in f or "bad_length" in f or "eof" in f:
                        return
        except (ssl.SSLError, OSError) as e:
            with lock:
                report["errors"].append(f"send: {e}")

    end = time.monotonic() + seconds
    threads = []
    while time.monotonic() < end:
        ls.settimeout(max(0.05, end - time.monotonic()))
        try:
            conn, _ = ls.accept()
        except (socket.timeout, TimeoutError):
            continue
        report["connections"] += 1
        t = threading.Thread(target=handle, args=(conn,), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(5)
    return report


def stream_send(order, data, o, report):
    """The forged source's answer to stream_send: its reply members (not ok)."""
    if o.get("stream") != "wrong-token":
        return {"code": "invalid", "error": "unknown standby action `stream_send`"}
    token = bytearray(bytes.fromhex(order["token"]))
    token[-1] ^= 1
    try:
        with socket.create_connection((order["address"], order["port"]), timeout=10) as s:
            s.sendall(bytes(token) + struct.pack(">Q", len(data)))
            try:
                s.sendall(data)
            except OSError:
                pass  # the target hung up after the token: its verdict is still readable
            verdict = s.recv(1)
        report["stream_status"] = verdict[0] if verdict else None
    except OSError as e:
        report["stream_error"] = str(e)
    return {"code": "failed", "error": f"the target answered {report.get('stream_status')}"}


def source(addr, host, ct, ct_addr, seconds, o):
    h, p = addr.rsplit(":", 1)
    report = {"orders": [], "error": None}
    files = {phase: open(o[phase], "rb").read() for phase in ("pre", "final")}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(o["cert"], o["key"])
    try:
        sock = ctx.wrap_socket(socket.create_connection((h, int(p)), timeout=5))
        sock.sendall(frame({"type": "hello", "host": host, "role": "standby",
                            "agent_version": "forged", "pid": 4243, "accel": "tcg", "vms": [],
                            "containers": [{"name": ct, "state": "running", "address": ct_addr,
                                            "service": ct}]}))
        end, seq, beat = time.monotonic() + seconds, 0, 0.0
        while time.monotonic() < end:
            if time.monotonic() >= beat:
                seq += 1
                sock.sendall(frame({"type": "heartbeat", "seq": seq}))
                beat = time.monotonic() + 0.5
            for f in read_frames(sock, min(end, time.monotonic() + 0.2)):
                if "eof" in f or "recv_error" in f or "bad_length" in f:
                    return report
                if f.get("type") != "order":
                    continue
                action = f.get("action")
                report["orders"].append(action)
                reply = {"type": "reply", "id": f.get("id"), "ok": True}
                data = files.get(f.get("phase"), b"")
                if action == "stream_send":
                    reply.update(ok=False, **stream_send(f, data, o, report))
                elif action == "container_checkpoint":
                    reply.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                 dump_ms=1)
                elif action == "container_image_read":
                    off, n = f.get("offset", 0), f.get("length", 0)
                    reply.update(data=base64.b64encode(data[off:off + n]).decode(),
                                 eof=off + n >= len(data), bytes=len(data))
                sock.sendall(frame(reply))
    except (ssl.SSLError, OSError) as e:
        report["error"] = str(e)
    except KeyboardInterrupt:  # SIGTERM: the test is done with it
        pass
    return report


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main():
    if sys.argv[1] == "source":
        signal.signal(signal.SIGTERM, on_sigterm)
        print(json.dumps(source(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5],
                                float(sys.argv[6]), opts(sys.argv[7:]))))
    elif sys.argv[1] == "hello":
        print(json.dumps(hello(sys.argv[2], sys.argv[3], sys.argv[4], opts(sys.argv[5:]))))
    else:
        print(json.dumps(serve(sys.argv[2], float(sys.argv[3]), opts(sys.argv[4:]))))


if __name__ == "__main__":
    main()
