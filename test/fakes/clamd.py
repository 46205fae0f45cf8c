#!/usr/bin/env python3
"""Fake clamd for the media e2e test (python3 stdlib, a unix socket): speaks the INSTREAM part of
clamd's protocol ("zINSTREAM\\0", then <big-endian u32 length><bytes> chunks, then a zero length;
answer "stream: OK\\0" or "stream: <name> FOUND\\0") and flags the EICAR test string, as a real
clamd with its signature database does.

  clamd.py SOCKET_PATH
"""
import os
import socket
import struct
import sys
import threading

EICAR = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def serve(conn):
    with conn:
        try:
            cmd = b""
            while not cmd.endswith(b"\0"):
                cmd += read_exact(conn, 1)
            if cmd not in (b"zINSTREAM\0", b"nINSTREAM\n"):
                conn.sendall(b"UNKNOWN COMMAND\0")
                return
            data = b""
            while True:
                (n,) = struct.unpack(">I", read_exact(conn, 4))
                if n == 0:
                    break
                data += read_exact(conn, n)
            verdict = b"stream: Eicar-Test-Signature FOUND" if EICAR in data else b"stream: OK"
            conn.sendall(verdict + b"\0")
        except (EOFError, ConnectionError):
            pass


def main():
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
