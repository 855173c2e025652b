#!/usr/bin/env python3
"""Collects one bench/run.sh run into bench/results/MODE.json and rewrites MODE's tables in
BENCHMARKS.md (between the `<!-- results:MODE:begin -->` and `<!-- results:MODE:end -->`
markers; appended at the end when they are missing). Standard library only.

    python3 bench/report.py MODE RAW_DIR [--profile P] [--durable yes|no] ...
"""

import argparse
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

# Goals of BENCHMARKS.md, by scenario.
GOALS = {
    "s1_ceiling": ("≥ 60 % of the ceiling's requests/s", lambda r: r >= 0.60),
    "s1_python": ("≥ 10× the Python peer", lambda r: r >= 10.0),
    "s1_http": ("report server CPU per request, HTTP ÷ gRPC", None),
    "s2": ("report the ratio to scenario 1", None),
    "s2_postgres": ("report the ratio to scenario 1, for 1 and 2 replicas", None),
    "pinned": ("report pinned beside unpinned", None),
    "many_sessions": ("report p50 on the large store ÷ on the small one", None),
    "s3": ("≤ 5 µs of server CPU per token", lambda r: r <= 5.0),
    "s4": ("report turns/s and p99", None),
    "s5": ("≤ 1.2", lambda r: r <= 1.2),
    "s6": ("≤ 20 KiB per stream", lambda r: r <= 20.0),
    "s7": ("≤ 100 ms", lambda r: r <= 100.0),
    "gateway": ("report gateway CPU per turn and turns/s, contextd ÷ SMG", None),
}


def load(path):
    with open(path) as f:
        return json.load(f)


def machine(raw):
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
        models = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")]
        info["cpu"] = models[0] if models else platform.processor()
        info["logical_cpus"] = len(models) or os.cpu_count()
    except OSError:
        info["cpu"], info["logical_cpus"] = platform.processor(), os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            mem = next(l for l in f if l.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    u = platform.uname()
    info["kernel"] = f"{u.system} {u.release} {u.machine}"
    for which in ("start", "end"):
        path = os.path.join(raw, f"loadavg-{which}.txt")
        if os.path.exists(path):
            with open(path) as f:
                info[f"loadavg_{which}"] = " ".join(f.read().split()[:3])
    info["rustc"] = command_output(["rustc", "--version"])
    return info


def command_output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_at(rounds, pointer):
    """The median over `rounds` of the value at `pointer` ("latency/p50_us"), None if absent."""
    values = []
    for r in rounds:
        v = r
        for part in pointer.split("/"):
            v = v.get(part) if isinstance(v, dict) else None
        values.append(v)
    return median(values)


def fmt(x, digits=1):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def verdict(key, value):
    check = GOALS[key][1]
    if value is None:
        return "not measured"
    if check is None:
        return "reported"
    return "met" if check(value) else "**missed**"


def ghz_summary(path):
    g = load(path)
    dist = {round(d["percentage"]): d["latency"] / 1000 for d in g.get("latencyDistribution") or []}
    # When its duration ends, ghz closes its connections under the calls still in flight
    # (bojand/ghz#121). Each such call fails on the client with one of a few messages, which one
    # depending on where the call was when its transport went away ("use of closed network
    # connection", "transport is closing", "the client connection is closing", a cancelled
    # context), counted as UNAVAILABLE or CANCELED. Those are the window's end, not the
    # server's errors, and at most `concurrency` calls can be in flight then; anything beyond
    # that, and any other code, is an error. (Matching only the first message made smoke runs
    # fail now and then on a busy machine, where more calls are caught mid-flight and in other
    # states.)
    window_end = ("use of closed network connection", "transport is closing",
                  "the client connection is closing", "context canceled")
    in_flight = int((g.get("options") or {}).get("concurrency") or 50)
    cut_off = min(in_flight, sum(
        n for message, n in (g.get("errorDistribution") or {}).items()
        if any(text in message for text in window_end)
    ))
    errors = {k: v for k, v in (g.get("statusCodeDistribution") or {}).items() if k != "OK"}
    left = cut_off
    for code in ("Unavailable", "Canceled"):
        if left and errors.get(code):
            taken = min(left, errors[code])
            errors[code] -= taken
            left -= taken
            if not errors[code]:
                del errors[code]
    return {
        "rps": g.get("rps"),
        "count": g.get("count"),
        "p50_us": dist.get(50),
        "p90_us": dist.get(90),
        "p99_us": dist.get(99),
        "errors": errors,
        "cut_off": cut_off,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("raw")
    parser.add_argument("--profile", default="release")
    parser.add_argument("--durable", default="no")
    parser.add_argument("--python-peer", default="no")
    parser.add_argument("--ghz", default="")
    parser.add_argument("--postgres", default="no")
    parser.add_argument("--pinned", default="no")
    parser.add_argument("--many-sessions", default="no")
    parser.add_argument("--gateway", default="no")
    parser.add_argument("--smg", default="")
    args = parser.parse_args()
    raw = args.raw

    results = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
        results[os.path.basename(path)[:-5]] = load(path)

    # Unary, per target: the median over rounds of each figure.
    unary = {}
    for name, r in results.items():
        if name.startswith("unary-"):
            target, _, round_no = name[len("unary-"):].rpartition("-r")
            unary.setdefault(target, []).append(dict(r, _round=int(round_no) if round_no.isdigit() else 0))

    def unary_stat(target, pointer):
        rounds = unary.get(target, [])
        values = []
        for r in rounds:
            v = r
            for part in pointer.split("/"):
                v = v.get(part) if isinstance(v, dict) else None
            values.append(v)
        return median(values)

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    rps = {t: unary_stat(t, "ops_per_s") for t in unary}
    cpu = {t: unary_stat(t, "server/cpu_us_per_op") for t in unary}
    ghz = {}
    for target in ("contextd", "ceiling"):
        path = os.path.join(raw, f"ghz-{target}.json")
        if os.path.exists(path):
            ghz[target] = ghz_summary(path)
            results.pop(f"ghz-{target}", None)
            results[f"ghz-{target}"] = ghz[target]

    many = many_sessions(results)
    gw = gateways(results)

    stream = results.get("stream", {})
    converse = results.get("converse", {})
    history = results.get("history", {})
    idle = results.get("idle", {})
    cold = results.get("coldstart-contextd", {})

    summary = {
        "s1_ceiling": ratio(rps.get("contextd"), rps.get("ceiling")),
        "s1_python": ratio(rps.get("contextd"), rps.get("python")),
        "s1_http": ratio(cpu.get("http"), cpu.get("contextd")),
        "s1_http_rps": ratio(rps.get("http"), rps.get("contextd")),
        "s2": ratio(rps.get("durable"), rps.get("contextd")),
        "s3": stream.get("server_cpu_us_per_token"),
        "s4": converse.get("turns_per_s"),
        "s5": history.get("ratio_p50"),
        "s6": round(idle["rss_per_stream_bytes"] / 1024, 2) if "rss_per_stream_bytes" in idle else None,
        "s7": cold.get("median_ms"),
        "ghz_ceiling": ratio((ghz.get("contextd") or {}).get("rps"), (ghz.get("ceiling") or {}).get("rps")),
        "s2_postgres": ratio(rps.get("postgres"), rps.get("contextd")),
        "s2_postgres2": ratio(rps.get("postgres2"), rps.get("contextd")),
        "s2_postgres_cpu": ratio(cpu.get("postgres"), cpu.get("contextd")),
        "s2_postgres2_cpu": ratio(cpu.get("postgres2"), cpu.get("contextd")),
        "pinned_contextd": ratio(rps.get("contextd-pinned"), rps.get("contextd")),
        "pinned_durable": ratio(rps.get("durable-pinned"), rps.get("durable")),
        "pinned_ceiling": ratio(rps.get("ceiling-pinned"), rps.get("ceiling")),
        "pinned_s1_ceiling": ratio(rps.get("contextd-pinned"), rps.get("ceiling-pinned")),
        "many_sessions_p50": many.get("ratio_p50"),
    }
    # The gateway ratios exist only when both sides of a pair ran (never in smoke).
    for key, value in gw.get("ratios", {}).items():
        summary[f"gateway_{key}"] = value

    commands = []
    commands_path = os.path.join(raw, "commands.txt")
    if os.path.exists(commands_path):
        with open(commands_path) as f:
            commands = [l.rstrip("\n") for l in f if l.strip()]

    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    if command_output(["git", "status", "--porcelain", "--", "src", "bench/loadgen", "Cargo.toml"]):
        commit += " (with uncommitted changes)"
    doc = {
        "mode": args.mode,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "profile": args.profile,
        "durable_store": args.durable == "yes",
        "python_peer": args.python_peer == "yes",
        "ghz": args.ghz == "yes",
        "postgres": args.postgres == "yes",
        "pinned": args.pinned == "yes",
        "many_sessions": many,
        "gateway": gw,
        "smg": args.smg == "yes",
        "machine": machine(raw),
        "summary": summary,
        "commands": commands,
        "results": results,
    }
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    out = os.path.join(BENCH, "results", f"{args.mode}.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")

    tables = render(doc, unary, unary_stat, rps, cpu, ghz, summary, many, gw)
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.mode == "smoke":
        # A harness check: its figures measure nothing, so they stay out of BENCHMARKS.md.
        print(tables)
        problems = smoke_problems(summary, results, args)
        for problem in problems:
            print(f"smoke: {problem}", file=sys.stderr)
        print(f"wrote {os.path.relpath(out, ROOT)}")
        if problems:
            sys.exit(1)
        return
    update_markdown(args.mode, tables)
    print(f"wrote {os.path.relpath(out, ROOT)} and BENCHMARKS.md ({args.mode})")


names_of_doors = {"connect": "the Connect protocol (JSON)", "grpcweb": "gRPC-Web (protobuf)"}


def many_sessions(results):
    """The many-sessions runs by store size: the median over rounds of each figure, the seeding
    behind them, and p50 (and p99) on the largest store ÷ on the smallest."""
    by_size = {}
    for name, r in results.items():
        if name.startswith("many-sessions-"):
            size, _, _ = name[len("many-sessions-"):].partition("-r")
            by_size.setdefault(int(size), []).append(r)
    sizes = {}
    for size, rounds in sorted(by_size.items()):
        def stat(pointer, rounds=rounds):
            return median_at(rounds, pointer)
        seed = results.get(f"seed-sessions-{size}", {})
        sizes[size] = {
            "rounds": len(rounds),
            "turns_per_s": stat("ops_per_s"),
            "p50_us": stat("latency/p50_us"),
            "p99_us": stat("latency/p99_us"),
            "cpu_us_per_turn": stat("server/cpu_us_per_op"),
            "peak_rss_kib": stat("server/peak_rss_kib"),
            "seed_s": seed.get("seed_s"),
            "seed_sessions_per_s": seed.get("sessions_per_s"),
            "data_dir_bytes": seed.get("data_dir_bytes"),
            "messages_per_session": (seed.get("setup") or {}).get("messages_per_session"),
        }
    out = {"sizes": {str(k): v for k, v in sizes.items()}}
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        out["small"], out["large"] = small, large
        for q in ("p50", "p99"):
            a, b = sizes[large][f"{q}_us"], sizes[small][f"{q}_us"]
            out[f"ratio_{q}"] = round(a / b, 3) if a is not None and b else None
    return out


# The gateway targets, in the order of the tables: (name, gateway, store).
GATEWAY_TARGETS = (
    ("gateway-contextd-memory", "contextd", "in-memory"),
    ("gateway-contextd-sqlite", "contextd", "SQLite (durable default)"),
    ("gateway-contextd-postgres", "contextd", "PostgreSQL"),
    ("gateway-smg-memory", "SMG", "memory history backend"),
    ("gateway-smg-postgres", "SMG", "PostgreSQL history backend"),
)

# The ratios contextd ÷ SMG: (key, contextd target, SMG target).
GATEWAY_PAIRS = (
    ("memory", "gateway-contextd-memory", "gateway-smg-memory"),
    ("sqlite_vs_memory", "gateway-contextd-sqlite", "gateway-smg-memory"),
    ("postgres", "gateway-contextd-postgres", "gateway-smg-postgres"),
)


def gateways(results):
    """The gateway rounds by target: the median over rounds of each figure, and contextd ÷ SMG
    for gateway CPU per turn and turns/s, pair by pair."""
    by_target = {}
    for name, r in results.items():
        if name.startswith("gateway-"):
            target, _, _ = name.rpartition("-r")
            by_target.setdefault(target, []).append(r)
    targets = {}
    for target, rounds in by_target.items():
        def stat(pointer, rounds=rounds):
            return median_at(rounds, pointer)
        errors = {}
        for r in rounds:
            for k, v in (r.get("errors") or {}).items():
                errors[k] = errors.get(k, 0) + v
        targets[target] = {
            "rounds": len(rounds),
            "turns_per_s": stat("ops_per_s"),
            "p50_us": stat("latency/p50_us"),
            "p99_us": stat("latency/p99_us"),
            "cpu_us_per_turn": stat("server/cpu_us_per_op"),
            "upstream_cpu_us_per_turn": stat("server/upstream_cpu_us_per_op"),
            "database_cpu_us_per_turn": stat("server/database_cpu_us_per_op"),
            "peak_rss_kib": stat("server/peak_rss_kib"),
            "upstream_calls_per_turn": stat("upstream/calls_per_turn"),
            "upstream_items_per_call": stat("upstream/input_items_per_call"),
            "upstream_request_bytes_per_turn": stat("upstream/request_bytes_per_turn"),
            "client_cpu_us_per_turn": median([client_us(r) for r in rounds]),
            "conversations": (rounds[0].get("setup") or {}).get("conversations"),
            "turns_per_conversation": (rounds[0].get("setup") or {}).get("turns_per_conversation"),
            "errors": errors,
        }
    ratios = {}
    for key, a, b in GATEWAY_PAIRS:
        if a in targets and b in targets:
            ca, cb = targets[a]["cpu_us_per_turn"], targets[b]["cpu_us_per_turn"]
            ra, rb = targets[a]["turns_per_s"], targets[b]["turns_per_s"]
            ratios[f"cpu_{key}"] = round(ca / cb, 3) if ca is not None and cb else None
            ratios[f"rps_{key}"] = round(ra / rb, 3) if ra is not None and rb else None
    return {"targets": targets, "ratios": ratios}


def smoke_problems(summary, results, args):
    """What keeps a smoke run from proving the harness works: a scenario without a figure,
    or a scenario whose calls failed."""
    problems = []
    for key, value in summary.items():
        if value is not None:
            continue
        if key == "s1_python" and args.python_peer != "yes":
            continue
        if key == "s2" and args.durable != "yes":
            continue
        if key == "ghz_ceiling" and args.ghz != "yes":
            continue
        if key.startswith("s2_postgres") and args.postgres != "yes":
            continue
        if key.startswith("pinned_") and (args.pinned != "yes" or
                                          (key == "pinned_durable" and args.durable != "yes")):
            continue
        if key == "many_sessions_p50" and args.many_sessions != "yes":
            continue
        problems.append(f"{key} has no figure")
    for name, result in results.items():
        errors = result.get("errors") if isinstance(result, dict) else None
        if errors:
            problems.append(f"{name} had errors: {errors}")
    return problems


def render(doc, unary, unary_stat, rps, cpu, ghz, s, many, gw):
    m = doc["machine"]
    res = doc["results"]
    lines = []
    lines.append(f"Run `{doc['mode']}` of {doc['generated']}, commit `{doc['commit']}`, "
                 f"`{doc['profile']}` builds.")
    if doc["mode"] == "smoke":
        lines.append("")
        lines.append("*A harness check (one-second windows, debug builds): these figures measure nothing.*")
    lines.append("")
    lines.append(f"Machine: {m.get('cpu')}, {m.get('logical_cpus')} logical CPUs, "
                 f"{m.get('memory_gib')} GiB, {m.get('kernel')}, {m.get('rustc')}; "
                 f"load average {m.get('loadavg_start')} at the start, {m.get('loadavg_end')} at the end "
                 "(the machine is shared: absolute figures are noise, ratios within the run are not).")
    lines.append("")
    lines.append("| # | Scenario | Measured | Goal | |")
    lines.append("|---|---|---|---|---|")
    r1 = s["s1_ceiling"]
    lines.append(f"| 1 | Unary `Interact`, 50 connections: contextd ÷ bare tonic ceiling | "
                 f"**{fmt(r1, 2)}** ({fmt(rps.get('contextd'), 0)} ÷ {fmt(rps.get('ceiling'), 0)} req/s) | "
                 f"{GOALS['s1_ceiling'][0]} | {verdict('s1_ceiling', r1)} |")
    rp = s["s1_python"]
    peer = f"**{fmt(rp, 2)}×** ({fmt(rps.get('contextd'), 0)} ÷ {fmt(rps.get('python'), 0)} req/s)" \
        if rp is not None else "Python peer not available"
    lines.append(f"| 1 | Unary `Interact`: contextd ÷ Python grpcio peer | {peer} | "
                 f"{GOALS['s1_python'][0]} | {verdict('s1_python', rp)} |")
    if "http" in unary:
        rh = s["s1_http"]
        lines.append(f"| 1 | Unary `Interact` over HTTP/JSON ÷ over gRPC, same contextd: server CPU per request | "
                     f"**{fmt(rh, 2)}** ({fmt(cpu.get('http'), 0)} ÷ {fmt(cpu.get('contextd'), 0)} µs; req/s "
                     f"{fmt(rps.get('http'), 0)} ÷ {fmt(rps.get('contextd'), 0)} = {fmt(s['s1_http_rps'], 2)}) | "
                     f"{GOALS['s1_http'][0]} | {verdict('s1_http', rh)} |")
    for door in ("connect", "grpcweb"):
        if cpu.get(door) is not None and cpu.get("contextd"):
            lines.append(f"| 1 | Unary `Interact` over {names_of_doors[door]} ÷ over gRPC, same contextd: server CPU "
                         f"per request | **{fmt(cpu[door] / cpu['contextd'], 2)}** ({fmt(cpu[door], 0)} ÷ "
                         f"{fmt(cpu['contextd'], 0)} µs; req/s {fmt(rps.get(door), 0)} ÷ "
                         f"{fmt(rps.get('contextd'), 0)}) | report | measured |")
    if all(cpu.get(t) is not None for t in ("auth", "nometrics", "contextd")):
        lines.append(f"| 1 | What trust costs per request, server CPU: API keys on − off; metrics on − off | "
                     f"**{fmt(cpu['auth'] - cpu['contextd'], 1)} µs** ({fmt(cpu['auth'], 0)} − "
                     f"{fmt(cpu['contextd'], 0)}); **{fmt(cpu['contextd'] - cpu['nometrics'], 1)} µs** "
                     f"({fmt(cpu['contextd'], 0)} − {fmt(cpu['nometrics'], 0)}) | report | measured |")
    if all(cpu.get(t) is not None for t in ("nokept", "contextd")):
        lines.append(f"| 1 | What the kept windows save per request (`engine.window_cache_bytes` = 0 ÷ the "
                     f"default): server CPU; req/s | **{fmt(cpu['nokept'] / cpu['contextd'], 2)}×** "
                     f"({fmt(cpu['nokept'], 0)} ÷ {fmt(cpu['contextd'], 0)} µs); "
                     f"{fmt(rps.get('nokept'), 0)} ÷ {fmt(rps.get('contextd'), 0)} req/s | report | measured |")
    if doc["durable_store"]:
        r2 = s["s2"]
        lines.append(f"| 2 | Unary on the durable default store ÷ scenario 1 | **{fmt(r2, 2)}** "
                     f"({fmt(rps.get('durable'), 0)} ÷ {fmt(rps.get('contextd'), 0)} req/s) | "
                     f"{GOALS['s2'][0]} | {verdict('s2', r2)} |")
    else:
        lines.append("| 2 | Unary on the durable default store | not available: this contextd has no "
                     "`--store` flag yet | report the ratio to scenario 1 | not measured |")
    if "postgres" in unary or "postgres2" in unary:
        lines.append(f"| 2 | Unary on PostgreSQL ÷ scenario 1: 1 replica; 2 replicas on one database | "
                     f"**{fmt(s['s2_postgres'], 2)}**; **{fmt(s['s2_postgres2'], 2)}** "
                     f"({fmt(rps.get('postgres'), 0)}; {fmt(rps.get('postgres2'), 0)} ÷ "
                     f"{fmt(rps.get('contextd'), 0)} req/s); contextd CPU per turn ÷ in-memory "
                     f"{fmt(s['s2_postgres_cpu'], 2)}; {fmt(s['s2_postgres2_cpu'], 2)} | "
                     f"{GOALS['s2_postgres'][0]} | {verdict('s2_postgres', s['s2_postgres'])} |")
    pinned = [t for t in ("contextd", "durable", "ceiling") if f"{t}-pinned" in unary]
    if pinned:
        figures = "; ".join(f"{t} **{fmt(ratio_of(rps.get(t + '-pinned'), rps.get(t)), 2)}**" for t in pinned)
        lines.append(f"| 1 | Pinned (server on CPU 0, load generator on CPU 1) ÷ unpinned, req/s | {figures}; "
                     f"contextd ÷ ceiling pinned **{fmt(s['pinned_s1_ceiling'], 2)}** (unpinned "
                     f"{fmt(s['s1_ceiling'], 2)}) | {GOALS['pinned'][0]} | {verdict('pinned', s['pinned_contextd'])} |")
    st = res.get("stream", {})
    lines.append(f"| 3 | `StreamResponse` relay, {st.get('streams', 64)} streams | "
                 f"**{fmt(s['s3'], 2)} µs** server CPU per token; {fmt(st.get('tokens_per_s'), 0)} tokens/s | "
                 f"{GOALS['s3'][0]} | {verdict('s3', s['s3'])} |")
    cv = res.get("converse", {})
    lat = cv.get("latency", {})
    lines.append(f"| 4 | `Converse` + client tool round trip per turn, "
                 f"{cv.get('setup', {}).get('connections', '?')}×{cv.get('setup', {}).get('in_flight', '?')} streams | "
                 f"**{fmt(s['s4'], 0)} turns/s**, p99 {fmt(ms(lat.get('p99_us')), 2)} ms | "
                 f"{GOALS['s4'][0]} | {verdict('s4', s['s4'])} |")
    h = res.get("history", {})
    lines.append(f"| 5 | Turn latency, {fmt(h.get('long_session_messages'))} ÷ "
                 f"{fmt(h.get('short_session_messages'))} messages of history (p50) | **{fmt(s['s5'], 2)}** "
                 f"({fmt(ms(h.get('long', {}).get('p50_us')), 2)} ÷ {fmt(ms(h.get('short', {}).get('p50_us')), 2)} ms; "
                 f"p99 ratio {fmt(h.get('ratio_p99'), 2)}) | {GOALS['s5'][0]} | {verdict('s5', s['s5'])} |")
    i = res.get("idle", {})
    lines.append(f"| 6 | Idle `Converse` streams ({fmt(i.get('streams_open'))} open) | **{fmt(s['s6'], 2)} KiB** "
                 f"server RSS per stream | {GOALS['s6'][0]} | {verdict('s6', s['s6'])} |")
    c = res.get("coldstart-contextd", {})
    lines.append(f"| 7 | Cold start to first SERVING health check (median of {c.get('setup', {}).get('runs', '?')}) | "
                 f"**{fmt(s['s7'], 1)} ms** (p90 {fmt(c.get('p90_ms'), 1)} ms) | {GOALS['s7'][0]} | "
                 f"{verdict('s7', s['s7'])} |")
    if many.get("large") is not None:
        small, large = many["sizes"][str(many["small"])], many["sizes"][str(many["large"])]
        lines.append(f"| 8 | Unary turn on a random one of {fmt(many['large'])} ÷ of {fmt(many['small'])} "
                     f"stored sessions (durable store, p50) | **{fmt(s['many_sessions_p50'], 2)}** "
                     f"({fmt(ms(large['p50_us']), 2)} ÷ {fmt(ms(small['p50_us']), 2)} ms; p99 ratio "
                     f"{fmt(many.get('ratio_p99'), 2)}) | {GOALS['many_sessions'][0]} | "
                     f"{verdict('many_sessions', s['many_sessions_p50'])} |")
    gt, gr = gw.get("targets", {}), gw.get("ratios", {})
    if gt:
        labels = {"memory": "in-memory ÷ SMG memory", "sqlite_vs_memory": "SQLite ÷ SMG memory",
                  "postgres": "PostgreSQL ÷ SMG PostgreSQL"}
        pairs = [(k, a, b) for k, a, b in GATEWAY_PAIRS if f"cpu_{k}" in gr]
        if pairs:
            figures = "; ".join(
                f"{labels[k]} **{fmt(gr[f'cpu_{k}'], 2)}** ({fmt(gt[a]['cpu_us_per_turn'], 0)} ÷ "
                f"{fmt(gt[b]['cpu_us_per_turn'], 0)} µs), turns/s {fmt(gr[f'rps_{k}'], 2)}"
                for k, a, b in pairs)
        else:
            figures = ("SMG not available: contextd alone, "
                       + "; ".join(f"{t[len('gateway-contextd-'):]} {fmt(gt[t]['cpu_us_per_turn'], 0)} µs/turn"
                                   for t, g, _ in GATEWAY_TARGETS if g == "contextd" and t in gt))
        lines.append(f"| 9 | Gateways in front of one fake OpenAI upstream, 16 conversations of 10 turns: "
                     f"gateway CPU per turn, contextd ÷ SMG | {figures} | {GOALS['gateway'][0]} | "
                     f"{verdict('gateway', gr.get('cpu_memory') if pairs else None)} |")
    lines.append("")

    lines.append("Unary detail (median of the rounds; server CPU per request from `/proc/<pid>/stat`):")
    lines.append("")
    lines.append("| Server | req/s | p50 | p90 | p99 | p99.9 | server CPU µs/req | peak RSS | reply bytes | errors |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    names = {"contextd": "contextd (in-memory store)",
             "http": "contextd over HTTP/JSON (in-memory store)",
             "auth": "contextd with API keys (`auth.mode = \"keys\"`, in-memory store)",
             "nometrics": "contextd with metrics off (`metrics.enabled = false`, in-memory store)",
             "nokept": "contextd with no kept windows (`engine.window_cache_bytes = 0`, in-memory store)",
             "connect": "contextd over the Connect protocol (unary JSON, in-memory store)",
             "grpcweb": "contextd over gRPC-Web (protobuf, in-memory store)",
             "short": "contextd (in-memory store, 512-token windows)",
             "durable": "contextd (durable default store)",
             "ceiling": "bare tonic ceiling", "python": "Python grpcio peer",
             "postgres": "contextd on PostgreSQL (one replica)",
             "postgres2": "contextd on PostgreSQL (two replicas, one database; CPU of both)",
             "contextd-pinned": "contextd (in-memory store), pinned",
             "durable-pinned": "contextd (durable default store), pinned",
             "ceiling-pinned": "bare tonic ceiling, pinned"}
    for target in ("contextd", "auth", "nometrics", "nokept", "http", "connect", "grpcweb", "short", "durable",
                   "ceiling", "python", "postgres", "postgres2", "contextd-pinned", "durable-pinned",
                   "ceiling-pinned"):
        if target not in unary:
            continue
        errors = {}
        for r in unary[target]:
            for k, v in (r.get("errors") or {}).items():
                errors[k] = errors.get(k, 0) + v
        lines.append(
            f"| {names[target]} | {fmt(rps[target], 0)} | "
            f"{fmt(ms(unary_stat(target, 'latency/p50_us')), 2)} ms | "
            f"{fmt(ms(unary_stat(target, 'latency/p90_us')), 2)} ms | "
            f"{fmt(ms(unary_stat(target, 'latency/p99_us')), 2)} ms | "
            f"{fmt(ms(unary_stat(target, 'latency/p999_us')), 2)} ms | "
            f"{fmt(unary_stat(target, 'server/cpu_us_per_op'), 0)} | "
            f"{fmt(kib_to_mib(unary_stat(target, 'server/peak_rss_kib')), 1)} MiB | "
            f"{fmt(unary_stat(target, 'reply_bytes'), 0)} | {errors or 'none'} |")
    lines.append("")
    if "postgres" in unary or "postgres2" in unary:
        lines.append("PostgreSQL (a throwaway cluster on this machine, fsync on; a fresh database per "
                     "target and round), beside the in-memory and the SQLite store: server CPU per turn "
                     "is every contextd replica's together; PostgreSQL's is the postmaster's and all its "
                     "backends' (`/proc`), and shares the same two cores:")
        lines.append("")
        lines.append("| Target | req/s | ÷ in-memory | p50 | p99 | contextd CPU µs/turn | PostgreSQL CPU µs/turn | "
                     "together µs/turn |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for target in ("contextd", "durable", "postgres", "postgres2"):
            if target not in unary:
                continue
            db = unary_stat(target, "server/database_cpu_us_per_op")
            own = cpu.get(target)
            lines.append(f"| {names[target]} | {fmt(rps[target], 0)} | {fmt(ratio_of(rps[target], rps.get('contextd')), 2)} | "
                         f"{fmt(ms(unary_stat(target, 'latency/p50_us')), 2)} ms | "
                         f"{fmt(ms(unary_stat(target, 'latency/p99_us')), 2)} ms | {fmt(own, 0)} | {fmt(db, 0)} | "
                         f"{fmt(own + db if own is not None and db is not None else own, 0)} |")
        lines.append("")
    if pinned:
        lines.append("Pinned beside unpinned (`bench/run.sh --pin`: the server under `taskset -c 0`, the load "
                     "generator under `taskset -c 1`, in the same rounds):")
        lines.append("")
        lines.append("| Server | req/s unpinned | req/s pinned | pinned ÷ unpinned | p50 unpinned / pinned | "
                     "server CPU µs/req unpinned / pinned | loadgen CPU µs/req unpinned / pinned |")
        lines.append("|---|---|---|---|---|---|---|")
        for t in pinned:
            p = t + "-pinned"
            lines.append(f"| {names[t]} | {fmt(rps.get(t), 0)} | {fmt(rps.get(p), 0)} | "
                         f"{fmt(ratio_of(rps.get(p), rps.get(t)), 2)} | "
                         f"{fmt(ms(unary_stat(t, 'latency/p50_us')), 2)} / {fmt(ms(unary_stat(p, 'latency/p50_us')), 2)} ms | "
                         f"{fmt(cpu.get(t), 0)} / {fmt(cpu.get(p), 0)} | "
                         f"{fmt(median([client_us(r) for r in unary.get(t, [])]), 0)} / "
                         f"{fmt(median([client_us(r) for r in unary.get(p, [])]), 0)} |")
        lines.append("")
    if many.get("sizes"):
        lines.append("Many sessions (durable default store; sessions written straight into the store, then "
                     "contextd started on it; every turn on a random stored session; median of the rounds):")
        lines.append("")
        lines.append("| Sessions stored | seeded in | seeded sessions/s | data dir | turns/s | p50 | p99 | "
                     "server CPU µs/turn | peak RSS |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for size, m in sorted(many["sizes"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {fmt(int(size))} | {fmt(m['seed_s'], 1)} s | {fmt(m['seed_sessions_per_s'], 0)} | "
                         f"{fmt(kib_to_mib(m['data_dir_bytes'] / 1024 if m['data_dir_bytes'] else None), 1)} MiB | "
                         f"{fmt(m['turns_per_s'], 0)} | {fmt(ms(m['p50_us']), 2)} ms | {fmt(ms(m['p99_us']), 2)} ms | "
                         f"{fmt(m['cpu_us_per_turn'], 0)} | {fmt(kib_to_mib(m['peak_rss_kib']), 1)} MiB |")
        lines.append("")
    if gt:
        first = next(iter(gt.values()))
        lines.append(f"Gateways (scenario 9; {first.get('conversations')} conversations at a time, "
                     f"{first.get('turns_per_conversation')} turns each, in front of `fake-openai`; "
                     "contextd: unary `Interact`; SMG: `POST /v1/responses` with `store: true` and "
                     "`previous_response_id`; median of the rounds). Gateway CPU is the gateway's "
                     "process tree's; the fake upstream's and PostgreSQL's are apart and not in it:")
        lines.append("")
        lines.append("| Gateway | store | turns/s | p50 | p99 | gateway CPU µs/turn | upstream CPU µs/turn | "
                     "PostgreSQL CPU µs/turn | upstream calls/turn | items per upstream call | "
                     "upstream request bytes/turn | peak RSS | errors |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for target, gateway, store in GATEWAY_TARGETS:
            if target not in gt:
                continue
            g = gt[target]
            lines.append(f"| {gateway} | {store} | {fmt(g['turns_per_s'], 0)} | {fmt(ms(g['p50_us']), 2)} ms | "
                         f"{fmt(ms(g['p99_us']), 2)} ms | {fmt(g['cpu_us_per_turn'], 0)} | "
                         f"{fmt(g['upstream_cpu_us_per_turn'], 0)} | {fmt(g['database_cpu_us_per_turn'], 0)} | "
                         f"{fmt(g['upstream_calls_per_turn'], 2)} | {fmt(g['upstream_items_per_call'], 1)} | "
                         f"{fmt(g['upstream_request_bytes_per_turn'], 0)} | "
                         f"{fmt(kib_to_mib(g['peak_rss_kib']), 1)} MiB | {g['errors'] or 'none'} |")
        lines.append("")
        if gr:
            lines.append("contextd ÷ SMG: " + "; ".join(
                f"{labels[k]}: gateway CPU per turn **{fmt(gr[f'cpu_{k}'], 2)}**, turns/s "
                f"**{fmt(gr[f'rps_{k}'], 2)}**" for k, _, _ in GATEWAY_PAIRS if f"cpu_{k}" in gr) + ".")
            lines.append("")
    if "http" in unary and "contextd" in unary:
        lines.append("HTTP/JSON beside native gRPC, round by round (each round starts a fresh in-memory "
                     "contextd for each; `POST /v1/sessions/{id}:interact`, one keep-alive HTTP/1.1 "
                     "connection per worker, against 50 HTTP/2 connections):")
        lines.append("")
        lines.append("| Round | gRPC req/s | HTTP/JSON req/s | gRPC server CPU µs/req | "
                     "HTTP/JSON server CPU µs/req | CPU HTTP ÷ gRPC | loadgen CPU µs/req gRPC / HTTP | "
                     "request bytes gRPC / JSON | reply bytes gRPC / JSON |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        grpc_rounds = {round_of(r): r for r in unary["contextd"]}
        for r in sorted(unary["http"], key=round_of):
            g = grpc_rounds.get(round_of(r))
            if g is None:
                continue
            gc, hc = (g.get("server") or {}).get("cpu_us_per_op"), (r.get("server") or {}).get("cpu_us_per_op")
            lines.append(f"| {round_of(r)} | {fmt(g.get('ops_per_s'), 0)} | {fmt(r.get('ops_per_s'), 0)} | "
                         f"{fmt(gc, 0)} | {fmt(hc, 0)} | {fmt(hc / gc if hc and gc else None, 2)} | "
                         f"{fmt(client_us(g), 0)} / {fmt(client_us(r), 0)} | "
                         f"{g.get('request_bytes')} / {r.get('request_bytes')} | "
                         f"{g.get('reply_bytes')} / {r.get('reply_bytes')} |")
        lines.append("")
        lines.append("The load generator runs on the same two cores, and its own CPU per request differs "
                     "between the two clients (tonic's gRPC client against hyper's HTTP/1.1 connection), "
                     "so requests/s compares the pair of client and server; server CPU per request "
                     "compares the servers.")
        lines.append("")
    if "short" in rps and rps.get("ceiling"):
        lines.append(
            "Every worker keeps one session, so within a second each window holds as much history "
            "as the 8,192-token default allows (about 330 messages) and every turn assembles it. "
            f"With 512-token windows (about 10 messages) contextd ÷ ceiling is "
            f"**{fmt(rps['short'] / rps['ceiling'], 2)}**: the difference is the cost of the window.")
        lines.append("")
    if ghz:
        lines.append("Cross-check with ghz (50 connections, concurrency 50):")
        lines.append("")
        lines.append("| Server | req/s | p50 | p90 | p99 | errors | cut off at the end |")
        lines.append("|---|---|---|---|---|---|---|")
        for target, g in ghz.items():
            lines.append(f"| {names[target]} | {fmt(g['rps'], 0)} | {fmt(ms(g['p50_us']), 2)} ms | "
                         f"{fmt(ms(g['p90_us']), 2)} ms | {fmt(ms(g['p99_us']), 2)} ms | {g['errors'] or 'none'} | "
                         f"{g.get('cut_off', 0)} |")
        lines.append("")
        lines.append(f"ghz's ratio contextd ÷ ceiling: **{fmt(s['ghz_ceiling'], 2)}**. ghz is a Go client "
                     "that needs more CPU per call than the servers, so on two shared cores it measures "
                     "mostly itself; the loadgen figures above are the ones the goals use. Calls still in "
                     "flight when ghz's window closes are counted as cut off, not as errors.")
        lines.append("")
    extra = []
    if "stream" in res:
        extra.append(f"stream: {fmt(st.get('ops_per_s'), 0)} turns/s of ~200 deltas, turn p50 "
                     f"{fmt(ms(st.get('latency', {}).get('p50_us')), 2)} ms, p99 "
                     f"{fmt(ms(st.get('latency', {}).get('p99_us')), 2)} ms, errors {st.get('errors') or 'none'}")
    if "converse" in res:
        extra.append(f"converse: p50 {fmt(ms(lat.get('p50_us')), 2)} ms, p99.9 {fmt(ms(lat.get('p999_us')), 2)} ms, "
                     f"server CPU {fmt(cv.get('server', {}).get('cpu_us_per_op'), 0)} µs/turn, errors {cv.get('errors') or 'none'}")
    for frames in ("json", "proto"):
        ws = res.get(f"ws-converse-{frames}")
        if ws and "converse" in res:
            ws_cpu = ws.get("server", {}).get("cpu_us_per_op")
            grpc_cpu = cv.get("server", {}).get("cpu_us_per_op")
            share = f"{ws_cpu / grpc_cpu:.2f}" if ws_cpu and grpc_cpu else "n/a"
            extra.append(f"converse over a WebSocket ({frames} frames, {fmt(ws.get('setup', {}).get('connections', 0) * ws.get('setup', {}).get('in_flight', 0))} sockets): "
                         f"{fmt(ws.get('turns_per_s'), 0)} turns/s, p50 {fmt(ms(ws.get('latency', {}).get('p50_us')), 2)} ms, "
                         f"server CPU {fmt(ws_cpu, 0)} µs/turn = {share} of gRPC Converse's, errors {ws.get('errors') or 'none'}")
    if "history" in res:
        extra.append(f"history: long session seeded at {fmt(h.get('seed_turns_per_s'), 0)} turns/s over one "
                     f"`Converse` stream; mean ratio {fmt(h.get('ratio_mean'), 2)}")
    if "idle" in res:
        extra.append(f"idle: RSS {fmt(kib_to_mib(i.get('rss_before_kib')), 1)} MiB before, "
                     f"{fmt(kib_to_mib(i.get('rss_open_kib')), 1)} MiB with the streams open (connections and "
                     f"sessions included); server CPU while idle {fmt(i.get('server_cpu_while_idle_s'), 3)} s over "
                     f"{fmt(i.get('setup', {}).get('hold_s'), 1)} s")
    for key, label in (("coldstart-durable", "durable store"), ("coldstart-ceiling", "bare tonic ceiling")):
        if key in res:
            extra.append(f"cold start, {label}: median {fmt(res[key].get('median_ms'), 1)} ms")
    if extra:
        lines.append("Also measured:")
        lines.append("")
        lines.extend(f"- {e}" for e in extra)
        lines.append("")
    lines.append("<details><summary>Exact commands of this run</summary>")
    lines.append("")
    lines.append("```sh")
    lines.extend(doc["commands"])
    lines.append("```")
    lines.append("")
    lines.append("</details>")
    return "\n".join(lines)


def ratio_of(a, b):
    return a / b if a is not None and b else None


def round_of(result):
    """The round number of a unary result, from its file name (`unary-TARGET-rN`)."""
    return result.get("_round", 0)


def client_us(result):
    """The load generator's own CPU time per answered request, in µs."""
    cpu, ok = result.get("client_cpu_seconds"), result.get("ok")
    return cpu * 1e6 / ok if cpu is not None and ok else None


def ms(us):
    return None if us is None else us / 1000.0


def kib_to_mib(kib):
    return None if kib is None else kib / 1024.0


def update_markdown(mode, tables):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    begin, end = f"<!-- results:{mode}:begin -->", f"<!-- results:{mode}:end -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{begin}\n{tables}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n## Results: `{mode}`\n\n{block}\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
