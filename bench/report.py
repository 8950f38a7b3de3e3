"""Turns bench/out/*.jsonl into RESULTS.md and one PNG chart per benchmark.

Usage: report.py OUT_DIR RESULTS_MD CHART_DIR. Medians over the rounds; every ratio divides
medians taken in the same run (the floor and the clients share the blaster and the rounds).
"""
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT, MD, CHARTS = sys.argv[1:4]
os.makedirs(CHARTS, exist_ok=True)

CLIENTS = [
    ("floor", "floor (tokio-tungstenite + zlib-rs, no library)"),
    ("rust", "tether Rust API"),
    ("c-single", "tether C API, tether_client_poll"),
    ("c-batch", "tether C API, tether_client_poll_batch"),
    ("python-tether", "tether Python binding (batch path, JSON parsed)"),
    ("python-websockets", "Python websockets + zlib + json"),
    ("node-ws", "Node ws + zlib + JSON.parse"),
    ("go-coder", "Go coder/websocket + compress/flate + encoding/json"),
]
SHAPES = [("realistic", "realistic (~440 B avg)"), ("1024", "1 KB"), ("10240", "10 KB")]

env = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(OUT, "env.txt")) if "=" in line)
rows = [json.loads(line) for line in open(os.path.join(OUT, "throughput.jsonl"))]


def median_eps(shape, z, client):
    v = [r["eps"] for r in rows if r["shape"] == shape and r["compress"] == z and r["client"] == client]
    return (statistics.median(v), len(v)) if v else (None, 0)


med = {}
for shape, _ in SHAPES:
    for z in (0, 1):
        for c, _ in CLIENTS:
            med[(shape, z, c)] = median_eps(shape, z, c)

lines = []
w = lines.append
w("# tether benchmarks\n")
if env.get("smoke") == "1":
    w("**SMOKE RUN: tiny sizes, one round. These numbers mean nothing.**\n")
w("Reproduce every figure and chart on this page with one command (from the repository root):\n")
w("```sh\nbench/run.sh\n```\n")
w(f"Command of this run: `{env.get('command')}`, {env.get('rounds')} rounds, finished {env.get('date')}.\n")
w("## Machine and versions\n")
w("| | |\n|---|---|")
for k in ("cpu", "cores", "mem", "kernel", "uptime", "rustc", "tether", "python", "websockets", "node", "ws", "go",
          "coder_websocket"):
    w(f"| {k} | `{env.get(k, '')}` |")
w("")
w("The machine is shared with other builds and test runs, so absolute numbers are noisy (see the load "
  "average above). Each round runs every client once, one after the other, against the same blaster "
  "process, so ratios of medians from the same run are what count.\n")

w("## 1. Event throughput\n")
w("Server: `tether-bench blaster` writes a stream built before the test (gomuks framing: one text message "
  "per event; compressed: raw deflate, one compressor for the connection, sync flush per message, 16 "
  "events batched per message as gomuks batches when the client falls behind, gomuks-rpc.md §5), so the "
  "client is what is measured (performance-anchors.md §7). Time runs from the first server message to the "
  "end marker. Every client extracts command, request id and payload of every event; the Python, Node and "
  "Go clients parse each event's JSON fully. Figures: events per second, median of the rounds.\n")
for shape, sname in SHAPES:
    for z in (0, 1):
        floor, _ = med[(shape, z, "floor")]
        w(f"### {sname} events, {'compressed' if z else 'uncompressed'}\n")
        w("| client | events/s (median) | runs | ratio to floor |\n|---|---:|---:|---:|")
        for c, cname in CLIENTS:
            m, n = med[(shape, z, c)]
            if m is None:
                w(f"| {cname} | not run | 0 | |")
                continue
            ratio = f"{m / floor:.2f}x" if floor else ""
            w(f"| {cname} | {m:,.0f} | {n} | {ratio} |")
        w("")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    for ax, z in zip(axes, (0, 1)):
        names, vals, colors = [], [], []
        for c, cname in CLIENTS:
            m, _ = med[(shape, z, c)]
            if m is None:
                continue
            names.append(c)
            vals.append(m)
            colors.append("#888888" if c == "floor" else ("#1f77b4" if c in ("rust", "c-single", "c-batch", "python-tether") else "#ff7f0e"))
        bars = ax.barh(names[::-1], vals[::-1], color=colors[::-1])
        floor = med[(shape, z, "floor")][0]
        for b, v in zip(bars, vals[::-1]):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2,
                    f" {v / 1000:,.0f}k" + (f" ({v / floor:.2f}x)" if floor else ""), va="center", fontsize=8)
        ax.set_title(f"{'compressed' if z else 'uncompressed'}")
        ax.set_xlabel("events/s (median)")
        ax.set_xlim(0, max(vals) * 1.35)
    fig.suptitle(f"Throughput, {sname} events (grey: floor, blue: tether, orange: other clients)")
    fig.tight_layout()
    fig.savefig(os.path.join(CHARTS, f"throughput-{shape}.png"), dpi=90)
    plt.close(fig)
    w(f"![throughput {sname}]({os.path.relpath(os.path.join(CHARTS, f'throughput-{shape}.png'), os.path.dirname(MD))})\n")

w("### Targets\n")
w("| target | measured (realistic events, uncompressed / compressed) | met |\n|---|---|---|")


def ratio(z, a, b):
    x, y = med[("realistic", z, a)][0], med[("realistic", z, b)][0]
    return x / y if x and y else None


def target_row(name, a, b, want, key=lambda r, want: r >= want):
    rs = [ratio(z, a, b) for z in (0, 1)]
    shown = " / ".join(f"{r:.2f}x" if r is not None else "n/a" for r in rs)
    met = all(r is not None and key(r, want) for r in rs)
    w(f"| {name} | {shown} | {'yes' if met else '**no**'} |")


target_row("Rust API ≥ 0.8x floor", "rust", "floor", 0.8)
target_row("C batch poll ≥ 0.7x floor", "c-batch", "floor", 0.7)
target_row("Python binding ≥ 3x Python websockets", "python-tether", "python-websockets", 3.0)
target_row("Python binding ahead of Node ws", "python-tether", "node-ws", 1.0)
target_row("Python binding ahead of Go coder/websocket", "python-tether", "go-coder", 1.0)
w("")

def chart_path(name):
    return os.path.relpath(os.path.join(CHARTS, name), os.path.dirname(MD))


rtt = [json.loads(line) for line in open(os.path.join(OUT, "rtt.jsonl"))]
RTT_CLIENTS = [("floor", "bare tokio-tungstenite client, same echo server"), ("c", "tether C API"),
               ("python", "tether Python binding (blocking request())")]
w("## 2. Request round trip\n")
w("Server: `tether-bench echo`, which answers each gomuks request on loopback with a `response` carrying "
  "its data. One request in flight at a time, uncompressed; median over the rounds of each round's p50 "
  "and p99.\n")
w("| client | p50 µs | p99 µs | p50 ratio to bare |\n|---|---:|---:|---:|")
rtt_med = {}
for c, cname in RTT_CLIENTS:
    v = [r for r in rtt if r["client"] == c]
    rtt_med[c] = (statistics.median(r["p50_us"] for r in v), statistics.median(r["p99_us"] for r in v))
for c, cname in RTT_CLIENTS:
    p50, p99 = rtt_med[c]
    w(f"| {cname} | {p50:.1f} | {p99:.1f} | {p50 / rtt_med['floor'][0]:.2f}x |")
w("")
fig, ax = plt.subplots(figsize=(8, 3.2))
ys = range(len(RTT_CLIENTS))
ax.barh([y + 0.2 for y in ys], [rtt_med[c][0] for c, _ in RTT_CLIENTS], height=0.4, label="p50", color="#1f77b4")
ax.barh([y - 0.2 for y in ys], [rtt_med[c][1] for c, _ in RTT_CLIENTS], height=0.4, label="p99", color="#aec7e8")
for y, (c, _) in zip(ys, RTT_CLIENTS):
    ax.text(rtt_med[c][0], y + 0.2, f" {rtt_med[c][0]:.0f} µs ({rtt_med[c][0] / rtt_med['floor'][0]:.1f}x)", va="center", fontsize=8)
    ax.text(rtt_med[c][1], y - 0.2, f" {rtt_med[c][1]:.0f} µs", va="center", fontsize=8)
ax.set_yticks(list(ys), [c for c, _ in RTT_CLIENTS])
ax.set_xlabel("round trip, µs (lower is better)")
ax.set_xlim(0, max(v[1] for v in rtt_med.values()) * 1.3)
ax.legend(loc="lower right")
ax.set_title("Request round trip on loopback (target: p50 ≤ 1.3x bare)")
fig.tight_layout()
fig.savefig(os.path.join(CHARTS, "rtt.png"), dpi=90)
plt.close(fig)
w(f"![rtt]({chart_path('rtt.png')})\n")

conns = [json.loads(line) for line in open(os.path.join(OUT, "conns.jsonl"))]
w("## 3. Memory per connection\n")
n_conns = conns[0]["clients"]
w(f"RSS growth of one process per added tether client, {n_conns:,} idle connected clients (gomuks, Rust API, "
  "against `tether-bench echo`), measured after the first client brought up the shared runtime. Median of "
  "the rounds.\n")
w("| mode | KiB per connection | target | met |\n|---|---:|---:|---|")
mem = {}
for z, target in ((0, 64), (1, 128)):
    mem[z] = statistics.median(r["kib_per_conn"] for r in conns if r["compress"] == z)
    w(f"| {'compressed' if z else 'uncompressed'} | {mem[z]:.1f} | ≤ {target} | {'yes' if mem[z] <= target else '**no**'} |")
w("")
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.barh(["compressed", "uncompressed"], [mem[1], mem[0]], color="#1f77b4")
for y, (v, t) in enumerate(((mem[1], 128), (mem[0], 64))):
    ax.plot([t, t], [y - 0.4, y + 0.4], color="red")
    ax.text(v, y, f" {v:.0f} KiB (target {t})", va="center")
ax.set_xlim(0, 180)
ax.set_xlabel(f"KiB RSS per idle connection ({n_conns} clients); red: target")
fig.tight_layout()
fig.savefig(os.path.join(CHARTS, "memory.png"), dpi=90)
plt.close(fig)
w(f"![memory]({chart_path('memory.png')})\n")

idle = json.load(open(os.path.join(OUT, "idle.json")))
w("## 4. Idle cost\n")
w(f"{idle['clients']} idle connected clients (plus the warm-up client), compressed, default 15 s keepalive, "
  f"over {idle['idle_secs']:.0f} s; CPU time from /proc/self/stat, wake-ups as the voluntary plus "
  "non-voluntary context switches of every thread (/proc/self/task/*/status).\n")
w("| CPU time | wake-ups | keepalive pings due | wake-ups per ping |\n|---:|---:|---:|---:|")
per = idle["idle_switches"] / idle["pings_expected"] if idle["pings_expected"] else float("nan")
w(f"| {idle['idle_cpu_ms']:.0f} ms | {idle['idle_switches']} | {idle['pings_expected']:.0f} | {per:.2f} |\n")
fig, ax = plt.subplots(figsize=(7, 2.4))
ax.barh(["wake-ups", "pings due"], [idle["idle_switches"], idle["pings_expected"]], color=["#1f77b4", "#888888"])
for y, v in enumerate((idle["idle_switches"], idle["pings_expected"])):
    ax.text(v, y, f" {v:.0f}", va="center")
ax.set_xlim(0, max(idle["idle_switches"], idle["pings_expected"], 1) * 1.25)
ax.set_title(f"{idle['clients']} idle clients, {idle['idle_secs']:.0f} s: {idle['idle_cpu_ms']:.0f} ms CPU")
fig.tight_layout()
fig.savefig(os.path.join(CHARTS, "idle.png"), dpi=90)
plt.close(fig)
w(f"![idle]({chart_path('idle.png')})\n")

bw = json.load(open(os.path.join(OUT, "bandwidth.json")))
w("## 6. Bandwidth saved by compression\n")
w(f"The realistic stream ({bw['events']:,} events, {bw['json_bytes']:,} bytes of JSON), bytes on the wire "
  "including websocket frame headers:\n")
w("| encoding | wire bytes | saved vs uncompressed |\n|---|---:|---:|")
w(f"| uncompressed (text message per event) | {bw['plain_wire']:,} | |")
w(f"| compressed, one event per message (live trickle) | {bw['z_wire_1']:,} | {1 - bw['z_wire_1'] / bw['plain_wire']:.1%} |")
w(f"| compressed, {bw['per_message']} events per message (client behind) | {bw['z_wire_batched']:,} | "
  f"{1 - bw['z_wire_batched'] / bw['plain_wire']:.1%} |")
w("")
fig, ax = plt.subplots(figsize=(8, 3))
labels = ["uncompressed", "deflate, 1/msg", f"deflate, {bw['per_message']}/msg"]
vals = [bw["plain_wire"] / 1e6, bw["z_wire_1"] / 1e6, bw["z_wire_batched"] / 1e6]
bars = ax.barh(labels[::-1], vals[::-1], color=["#1f77b4", "#1f77b4", "#888888"])
for b, v in zip(bars, vals[::-1]):
    ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.1f} MB ({v / vals[0]:.0%})", va="center")
ax.set_xlim(0, vals[0] * 1.3)
ax.set_xlabel("MB on the wire")
ax.set_title(f"Bandwidth of {bw['events']:,} realistic events")
fig.tight_layout()
fig.savefig(os.path.join(CHARTS, "bandwidth.png"), dpi=90)
plt.close(fig)
w(f"![bandwidth]({chart_path('bandwidth.png')})\n")

extra = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
if os.path.exists(extra):
    w(open(extra).read())
open(MD, "w").write("\n".join(lines) + "\n")
print(f"wrote {MD} and charts in {CHARTS}")
