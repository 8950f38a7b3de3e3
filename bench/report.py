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
w(f"![bandwidth]({os.path.relpath(os.path.join(CHARTS, 'bandwidth.png'), os.path.dirname(MD))})\n")

extra = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")
if os.path.exists(extra):
    w(open(extra).read())
open(MD, "w").write("\n".join(lines) + "\n")
print(f"wrote {MD} and charts in {CHARTS}")
