"""A throwaway Synapse homeserver on 127.0.0.1 for the interop suite, plus "bob", a second
Matrix client that talks to it over plain HTTP (gomuks-rpc.md §13.3).

  hs.py start DIR      generate a config in DIR, start Synapse, register alice and bob, have
                       bob create a room and invite alice; prints one JSON line
                       {"hs": URL, "room": ROOM_ID, "user": "alice", "password": ...}
  hs.py send DIR N TAG bob sends N text messages "TAG-0" .. "TAG-(N-1)" to the room
  hs.py room DIR NAME  bob creates another private room NAME and invites alice; prints its ID
  hs.py send-to DIR ROOM N TAG   like send, to ROOM
  hs.py typing DIR ROOM MS       bob types in ROOM for MS milliseconds (0: stops typing)
  hs.py stop DIR       stop Synapse (SIGTERM, then SIGKILL after 10 s)

Everything lives in DIR; the caller removes it.
"""

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PASSWORD = "interop-password-1"


def call(url, method="GET", body=None, token=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: HTTP {e.code}: {e.read()[:500]!r}") from None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register(hs, secret, user):
    """Shared-secret registration (Synapse admin API), no captcha or email."""
    nonce = call(hs + "/_synapse/admin/v1/register")["nonce"]
    msg = "\x00".join((nonce, user, PASSWORD, "notadmin")).encode()
    mac = hmac.new(secret.encode(), msg, digestmod=hashlib.sha1).hexdigest()
    body = {"nonce": nonce, "username": user, "password": PASSWORD, "admin": False, "mac": mac}
    return call(hs + "/_synapse/admin/v1/register", "POST", body)


def start(d):
    py = sys.executable
    cfg = os.path.join(d, "hs.yaml")
    subprocess.run([py, "-m", "synapse.app.homeserver", "--server-name", "localhost",
                    "--config-path", cfg, "--generate-config", "--report-stats=no",
                    "--data-directory", d], check=True, stdout=subprocess.DEVNULL, cwd=d)
    port = free_port()
    secret = "interop-shared-secret"
    extra = f"""
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
registration_shared_secret: "{secret}"
enable_registration: false
suppress_key_server_warning: true
trusted_key_servers: []
federation_domain_whitelist: []
presence:
  enabled: false
url_preview_enabled: false
rc_message: {{per_second: 1000, burst_count: 1000}}
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_joins:
  local: {{per_second: 1000, burst_count: 1000}}
rc_invites:
  per_room: {{per_second: 1000, burst_count: 1000}}
  per_user: {{per_second: 1000, burst_count: 1000}}
rc_key_requests: {{per_second: 1000, burst_count: 1000}}
"""
    # The generated file's own listeners/secret lines are replaced: later keys would clash.
    lines = open(cfg).read().splitlines()
    kept, skip = [], False
    for line in lines:
        if line.startswith(("listeners:", "registration_shared_secret:")):
            skip = line.startswith("listeners:")
            continue
        if skip and (line.startswith(" ") or line.startswith("-")):
            continue
        skip = False
        kept.append(line)
    with open(cfg, "w") as f:
        f.write("\n".join(kept) + "\n" + extra)
    log = open(os.path.join(d, "synapse.out"), "w")
    proc = subprocess.Popen([py, "-m", "synapse.app.homeserver", "--config-path", cfg],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=d)
    with open(os.path.join(d, "pid"), "w") as f:
        f.write(str(proc.pid))
    hs = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            raise SystemExit("synapse exited; see " + os.path.join(d, "synapse.out"))
        try:
            call(hs + "/_matrix/client/versions", timeout=2)
            break
        except (OSError, SystemExit):
            if time.time() > deadline:
                raise SystemExit("synapse did not answer in 90 s")
            time.sleep(0.3)
    register(hs, secret, "alice")
    bob = register(hs, secret, "bob")
    room = call(hs + "/_matrix/client/v3/createRoom", "POST",
                {"preset": "private_chat", "invite": ["@alice:localhost"], "name": "interop"},
                token=bob["access_token"])["room_id"]
    state = {"hs": hs, "room": room, "user": "alice", "password": PASSWORD,
             "bob_token": bob["access_token"]}
    with open(os.path.join(d, "state.json"), "w") as f:
        json.dump(state, f)
    print(json.dumps({k: state[k] for k in ("hs", "room", "user", "password")}), flush=True)


def send(d, n, tag, room=None):
    st = json.load(open(os.path.join(d, "state.json")))
    room = room or st["room"]
    for i in range(n):
        txn = f"{tag}-{i}-{time.time_ns()}"
        url = f"{st['hs']}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"
        call(url, "PUT", {"msgtype": "m.text", "body": f"{tag}-{i}"}, token=st["bob_token"])


def room(d, name):
    st = json.load(open(os.path.join(d, "state.json")))
    body = {"preset": "private_chat", "invite": ["@alice:localhost"], "name": name}
    url = st["hs"] + "/_matrix/client/v3/createRoom"
    print(call(url, "POST", body, token=st["bob_token"])["room_id"], flush=True)


def typing(d, room_id, ms):
    st = json.load(open(os.path.join(d, "state.json")))
    url = f"{st['hs']}/_matrix/client/v3/rooms/{room_id}/typing/@bob:localhost"
    body = {"typing": ms > 0, "timeout": ms} if ms > 0 else {"typing": False}
    call(url, "PUT", body, token=st["bob_token"])


def stop(d):
    try:
        pid = int(open(os.path.join(d, "pid")).read())
    except OSError:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    cmd, d = sys.argv[1], os.path.abspath(sys.argv[2])
    if cmd == "start":
        start(d)
    elif cmd == "send":
        send(d, int(sys.argv[3]), sys.argv[4])
    elif cmd == "room":
        room(d, sys.argv[3])
    elif cmd == "send-to":
        send(d, int(sys.argv[4]), sys.argv[5], sys.argv[3])
    elif cmd == "typing":
        typing(d, sys.argv[3], int(sys.argv[4]))
    elif cmd == "stop":
        stop(d)
    else:
        raise SystemExit(__doc__)
