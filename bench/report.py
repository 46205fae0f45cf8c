#!/usr/bin/env python3
"""Render bench/run.sh results: one table on stdout and bench/results/<date>.md.

usage: report.py MACHINE.json RESULTS.ndjson OUT.md END_LOADAVG BENCH_DIR
"""
import json
import os
import re
import sys

machine_path, results_path, out_path, end_load, bench_dir = sys.argv[1:6]
machine = json.load(open(machine_path))
rows = [json.loads(l) for l in open(results_path) if l.strip()]


def by(bench, kind=None):
    return [r for r in rows if r.get("bench") == bench and r.get("kind") == kind]


def loadgen_rows(bench):
    return [r for r in by(bench) if "rps" in r and "p50_ms" in r]


def best(rs):
    rs = [r for r in rs if r.get("ok", 0) > 0]
    return max(rs, key=lambda r: r["rps"]) if rs else None


def ms(v):
    return "%.3f" % v


def status_str(r):
    bad = {k: v for k, v in r.get("status", {}).items() if not k.startswith("2")}
    parts = ["%s×%d" % (k, v) for k, v in sorted(bad.items())]
    for key, name in (("reset", "reset"), ("connect_errors", "connect"), ("unsent", "unsent")):
        if r.get(key):
            parts.append("%s×%d" % (name, r[key]))
    return ", ".join(parts) or "0"


# ---- the six figures ----
ceiling = best(loadgen_rows(1))
ingest = best([r for r in loadgen_rows(2) if r.get("body") == "text"])
ratio = ingest["rps"] / ceiling["rps"] if ceiling and ingest else None
pipeline = loadgen_rows(3)
pipe_skip = [r for r in by(3) if "skipped" in r]
lat = {r["label"]: r for r in loadgen_rows(4)}
idle = {r["label"]: r for r in by(5) if "conns" in r}
cg = [r for r in by(6) if "instructions" in r]


def per_conn(r):
    return (r["rss_with_kib"] - r["rss_before_kib"]) / r["conns"] if r["conns"] else 0


figures = []  # (number, what, value, target)
figures.append(("1", "HTTP ceiling (nginx, 1 worker)", "%.0f req/s (c=%d)" % (ceiling["rps"], ceiling["conns"]) if ceiling else "failed", "reference"))
# A run without figure 1 (--only 2) has no ceiling to divide by: say so rather than fail.
figures.append(("2", "ingest (hookgate, 1 worker, spool+ndjson, signature on)",
                ("%.0f req/s (c=%d), " % (ingest["rps"], ingest["conns"]) +
                 ("%.3f × ceiling" % ratio if ratio is not None else "no ceiling in this run")) if ingest else "failed",
                "≥ 0.6 × ceiling"))
ceil_rows = [r for r in by(3, "ceiling") if r.get("rps")]
plain_rows = [r for r in ceil_rows if r.get("topology", "plain") == "plain"]
hg_rows = [r for r in ceil_rows if r.get("topology") == "hookgate"]
broker = max(plain_rows, key=lambda r: r["rps"]) if plain_rows else None
broker_hg = max(hg_rows, key=lambda r: r["rps"]) if hg_rows else None
published = {r["label"]: r for r in by(3, "published")}


def pipeline_figure(label):
    """'acked X req/s, published Y ev/s, sustained Z = R × broker ceiling' for one pipeline run."""
    p = next((r for r in pipeline if r["label"] == label), None)
    if p is None:
        return None
    pub = published.get(label)
    text = "acked %.0f req/s (c=%d)" % (p["rps"], p["conns"])
    sustained = p["rps"]
    if pub:
        text += ", published %.0f ev/s (%d/%d confirmed, drain %.1f s)" % (
            pub["published_rps"], pub["confirmed"], pub["accepted"], pub["seconds"])
        sustained = min(p["rps"], pub["published_rps"])
    if broker:
        text += "; sustained %.0f = %.2f × broker ceiling (%.0f msg/s, %d B, window %d)" % (
            sustained, sustained / broker["rps"], broker["rps"], broker["size"], broker["window"])
    if broker_hg:
        text += ", %.2f × the broker's ceiling on hookgate's queues and messages (%.0f msg/s, window %d)" % (
            sustained / broker_hg["rps"], broker_hg["rps"], broker_hg["window"])
    return text


if pipeline:
    for label, what in (("pipeline c=64", "full pipeline (Redis + RabbitMQ + S3)"),
                        ("pipeline redis+amqp c=64", "pipeline without S3 archive (Redis + RabbitMQ)")):
        t = pipeline_figure(label)
        if t:
            figures.append(("3", what, t, "≥ 0.9 × broker ceiling"))
    for label, what in (("full pipeline", "full pipeline, sustained rate (highest open-loop rate kept up with, archive included)"),
                        ("pipeline redis+amqp", "pipeline without S3, sustained rate (highest open-loop rate kept up with)")):
        ladder = [r for r in by(3, "ladder") if r["label"] == label]
        if not ladder:
            continue
        kept = [r["rate"] for r in ladder if r["kept_up"]]
        best = max(kept) if kept else 0
        tried = ", ".join("%d%s" % (r["rate"], "" if r["kept_up"] else " ✗") for r in ladder)
        text = "%d req/s acked and published (open loop, rates tried: %s)" % (best, tried)
        if broker:
            text += "; %.2f × broker ceiling" % (best / broker["rps"])
        if broker_hg:
            text += ", %.2f × the ceiling on hookgate's queues and messages" % (best / broker_hg["rps"])
        figures.append(("3", what, text, "≥ 0.9 × broker ceiling"))
    # The closed loop leaves a backlog; once the load stops, the drain publishes it with the intake
    # idle: the drain's own rate, against the broker that limits it.
    for label, what in (("pipeline redis+amqp c=64", "drain alone, intake idle (catching up after the closed loop, without S3)"),
                        ("pipeline c=64", "drain alone, intake idle (catching up after the closed loop, with S3)")):
        pub = published.get(label)
        if not pub or not pub.get("catchup_rps"):
            continue
        text = "%.0f ev/s (%d events in %.1f s)" % (pub["catchup_rps"], pub["catchup_events"], pub["catchup_seconds"])
        if broker:
            text += "; %.2f × broker ceiling" % (pub["catchup_rps"] / broker["rps"])
        if broker_hg:
            text += ", %.2f × the ceiling on hookgate's queues and messages" % (pub["catchup_rps"] / broker_hg["rps"])
        figures.append(("3", what, text, "— (hookgate's share of the gap)"))
else:
    figures.append(("3", "full pipeline (Redis + RabbitMQ + S3)",
                    "skipped: " + (pipe_skip[0]["skipped"] if pipe_skip else "not run"), "≥ 0.9 × broker ceiling"))
for rate, target in (("500", "p99 ≤ 2 ms"), ("5000", "")):
    r = lat.get("hookgate @%s/s" % rate)
    figures.append(("4", "ingest latency, open loop %s req/s" % rate,
                    "p50 %s / p99 %s / p99.9 %s ms (%.0f req/s done)" % (ms(r["p50_ms"]), ms(r["p99_ms"]), ms(r["p999_ms"]), r["rps"]) if r else "failed",
                    target or "—"))
    r = lat.get("pipeline @%s/s" % rate)
    if r:
        figures.append(("4", "pipeline latency, open loop %s req/s" % rate,
                        "p50 %s / p99 %s / p99.9 %s ms" % (ms(r["p50_ms"]), ms(r["p99_ms"]), ms(r["p999_ms"])),
                        "p99 ≤ 10 ms" if rate == "500" else "—"))
    r = lat.get("pipeline redis+amqp @%s/s" % rate)
    if r:
        figures.append(("4", "pipeline latency without S3 archive, open loop %s req/s" % rate,
                        "p50 %s / p99 %s / p99.9 %s ms" % (ms(r["p50_ms"]), ms(r["p99_ms"]), ms(r["p999_ms"])),
                        "— (what the S3 fake's CPU costs)"))
for r in by(4, "floor"):
    if r["mode"] == "fdatasync":
        figures.append(("4", "floor: a lone commit on this disk (fdatasync job) @500/s",
                        "p50 %s / p99 %s / p99.9 %s ms" % (ms(r["p50_ms"]), ms(r["p99_ms"]), ms(r["p999_ms"])),
                        "— (the machine)"))
r = idle.get("hookgate idle")
figures.append(("5", "RSS per idle keep-alive connection",
                "%.2f KiB (%d conns: %d → %d KiB)" % (per_conn(r), r["conns"], r["rss_before_kib"], r["rss_with_kib"]) if r else "failed",
                "≤ 8 KiB"))
if cg:
    c = cg[0]
    figures.append(("6", "instructions per webhook (callgrind)", "%d Ir (%d requests)" % (c["instructions"] // c["requests"], c["requests"]), "regression guard"))
else:
    s = [r for r in by(6) if "skipped" in r]
    figures.append(("6", "instructions per webhook (callgrind)", "skipped: " + s[0]["skipped"] if s else "failed", "regression guard"))

# ---- detail table ----
detail = []
for r in rows:
    if r.get("kind") == "ceiling" and "rps" in r:
        detail.append([str(r["bench"]), r["label"], "publish+confirm", "w=%d" % r["window"], "%.0f" % r["rps"],
                       "", "", "", "", "0" if not r.get("nacked") else "nack×%d" % r["nacked"], "%d B msgs" % r["size"]])
    elif "rps" in r and "p50_ms" in r:
        detail.append([str(r["bench"]), r["label"], r["mode"] + (" %.0f/s" % r["rate"] if r["mode"] == "open" else ""),
                       str(r["conns"]), "%.0f" % r["rps"], ms(r["p50_ms"]), ms(r["p90_ms"]), ms(r["p99_ms"]),
                       ms(r["p999_ms"]), status_str(r), "%.0f%%" % (100 * r.get("client_cpu", 0))])
    elif r.get("failed"):
        detail.append([str(r["bench"]), r["label"], "FAILED"] + [""] * 8)
    elif "skipped" in r:
        detail.append([str(r["bench"]), r["label"], "skipped"] + [""] * 7 + [r["skipped"][:60]])
head = ["#", "run", "mode", "conns", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "client cpu"]


def text_table(h, body):
    w = [max(len(x[i]) for x in [h] + body) for i in range(len(h))]
    line = lambda x: "  ".join(c.ljust(w[i]) for i, c in enumerate(x))
    return "\n".join([line(h), line(["-" * n for n in w])] + [line(x) for x in body])


def md_table(h, body):
    out = ["| " + " | ".join(h) + " |", "|" + "|".join("---" for _ in h) + "|"]
    out += ["| " + " | ".join(x) + " |" for x in body]
    return "\n".join(out)


print()
print("hookgate benchmarks%s — %s, %s CPUs, load %s → %s" % (" (quick)" if machine.get("quick") else "", machine["cpu"], machine["nproc"], machine["load_start"], end_load))
print(text_table(["#", "figure", "value", "target"], [list(f) for f in figures]))
print()
print(text_table(head, detail))
print()

# ---- markdown ----
md = []
md.append("# hookgate benchmarks — %s%s\n" % (machine["date"], " (quick run: harness check only, numbers not meaningful)" if machine.get("quick") else ""))
md.append("Produced by `bench/run.sh%s` (`make bench%s`). See bench/README.md for what each figure measures.\n" %
          (" --quick" if machine.get("quick") else "", " QUICK=1" if machine.get("quick") else ""))
md.append("## Machine\n")
for k in ("nproc", "cpu", "mem", "kernel", "os", "fs", "cc", "nginx", "hookgate", "libuv", "jansson", "mbedtls", "valgrind", "perf_counters"):
    md.append("* %s: %s" % (k, machine.get(k, "?")))
md.append("* load average (1/5/15 min) at start: %s, at end: %s" % (machine["load_start"], end_load))
md.append("\n**Noise:** this machine has 2 cores shared with other engineers' builds and tests, and the load "
          "generator runs on the same 2 cores as the server. Absolute numbers move by tens of percent between "
          "runs; ratios measured in the same run and the callgrind instruction count are the stable figures.\n")
md.append("## The six figures\n")
md.append(md_table(["#", "figure", "value", "target"], [list(f) for f in figures]))
md.append("\n## Every run\n")
md.append("Latency in closed loop is per request from its send; in open loop (`@N/s`) from its *scheduled* send time "
          "(no coordinated omission). `client cpu` is the load generator's share of one core: near 100 % the client "
          "may be the limit.\n")
md.append(md_table(head, detail))

metr = by(2, "metrics")
if metr:
    md.append("\n## Group commit during the ingest runs (hookgate /metrics)\n")
    mrows = []
    for m in metr:
        n, f = m["requests_200"], m["fsyncs"]
        mrows.append([m["label"], "%d" % n, "%d" % f, "%.1f" % (n / f) if f else "—",
                      "%.3f" % (1000 * m["fsync_seconds"] / f) if f else "—"])
    md.append(md_table(["run", "requests 200", "spool fsyncs", "requests per fsync", "mean fsync ms"], mrows))

flo = by(4, "floor")
if flo:
    md.append("\n## The machine's floor under figure 4 (bench/fsync_floor.c)\n")
    md.append("One libuv threadpool job every 2 ms, as the spool queues a lone webhook's group commit, timed from "
              "queue to after-work callback: `empty` = the two cross-thread wake-ups alone; `fdatasync` = pwrite "
              "1 KiB into a zero-filled file + fdatasync, on the spool's disk. No HTTP and no load generator: "
              "hookgate's @500/s latency cannot be below the `fdatasync` row.\n")
    md.append(md_table(["job", "rate", "jobs", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"],
                       [[r["mode"], "%.0f/s" % r["rate"], "%d" % r["jobs"], ms(r["p50_ms"]), ms(r["p90_ms"]),
                         ms(r["p99_ms"]), ms(r["p999_ms"]), ms(r["max_ms"])] for r in flo]))

brk = by(4, "breakdown")
if brk:
    md.append("\n## Pipeline latency runs: where the time goes (hookgate /metrics, /proc)\n")
    md.append("`hookgate` = request start → answer inside hookgate (the client's latency adds the loopback and the "
              "client). S3 uploads = archive PUTs finished during the run and their mean time from the drain's "
              "start of the upload (queueing included). CPU in cores over the run; the S3 fake shares the 2 cores.\n")
    f = lambda v, fmt: "—" if v is None else fmt % v
    md.append(md_table(["run", "hookgate mean ms", "hookgate p99 ≤ ms", "fsyncs", "mean fsync ms", "S3 uploads",
                        "mean upload ms", "hookgate cpu", "S3 fake cpu", "spool records after"],
                       [[r["label"], f(r["hookgate_mean_ms"], "%.2f"), f(r["hookgate_p99_le_ms"], "%.1f"),
                         "%d" % r["fsyncs"], f(r["fsync_mean_ms"], "%.2f"), "%d" % r["s3_uploads"],
                         f(r["s3_upload_mean_ms"], "%.0f"), "%.2f" % r["hookgate_cpu"], "%.2f" % r["s3_fake_cpu"],
                         "%d" % r["spool_records_after"]] for r in brk]))

sysc = [r for r in by(6, "syscalls") if "calls" in r]
if sysc:
    md.append("\n## Syscalls per webhook at 500 req/s (strace -f -c)\n")
    md.append("Every syscall of the hookgate process (loop and threadpool threads) during an open-loop run at "
              "500 req/s, divided by the requests answered. A count, like figure 6: strace slows the process, "
              "so no time is read from it.\n")
    # The columns: the syscalls with the highest rate in any run.
    rate = {}
    for r in sysc:
        for k, v in r["calls"].items():
            rate[k] = max(rate.get(k, 0), v / r["requests"])
    names = sorted(rate, key=lambda k: -rate[k])[:12]
    md.append(md_table(["run", "requests", "all"] + names,
                       [[r["label"], "%d" % r["requests"], "%.1f" % (sum(r["calls"].values()) / r["requests"])] +
                        ["%.2f" % (r["calls"].get(k, 0) / r["requests"]) for k in names] for r in sysc]))

for name, title in (("callgrind-inclusive.txt", "inclusive"), ("callgrind-self.txt", "self")):
    path = os.path.join(bench_dir, name)
    if not cg or not os.path.exists(path):
        continue
    n = cg[0]["requests"]
    total = cg[0]["instructions"]
    lines = []
    seen = set()
    for l in open(path):
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", l)
        if not m or "PROGRAM TOTALS" in l:
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(3)
        # callgrind_annotate attributes the whole thread to its entry points; they say nothing.
        if re.search(r"clone\.S|start_thread|worker_main|uv_run|uv__io_poll|uv__run", fn):
            continue
        # Inclusive costs of recursive or unnamed (stripped library) entries are not meaningful.
        if title == "inclusive" and (float(m.group(2)) > 100 or "???:0x" in fn):
            continue
        fn = re.sub(r"^\S*/(src/|llhttp/)", r"\1", fn)
        fn = re.sub(r" \[/[^\]]*/([^/\]]+)\]$", r" [\1]", fn)
        key = fn.split(" [")[0]
        if key in seen:
            continue
        seen.add(key)
        lines.append([fn.replace("|", "\\|"), "%d" % (ir // n), m.group(2)])
        if len(lines) >= 40:
            break
    md.append("\n## callgrind, %s cost per webhook (top functions)\n" % title)
    md.append("%d requests (fixed bodies, 1 connection), %d Ir in total after warm-up; Ir/webhook = cost / %d.\n" % (n, total, n))
    md.append(md_table(["function", "Ir per webhook", "% of total"], lines))

md.append("\n## Raw results (JSON lines)\n")
md.append("```")
md.extend(json.dumps(r, ensure_ascii=False) for r in rows)
md.append("```\n")
with open(out_path, "w") as f:
    f.write("\n".join(md))
