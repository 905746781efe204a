"""Timing and memory measurement: medians over repeats of
time.perf_counter() differences, and peak resident memory of a child process.

The one thing to know: measure_many times the contenders interleaved, so
that they share the machine's background load, after `warmup` untimed calls
each (first calls pay imports, caches and session creation)."""
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


@dataclasses.dataclass
class Stats:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples):
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def to_json(self):
        return dataclasses.asdict(self)


def measure_many(fns, repeats, warmup=1, budget_s=None, min_repeats=3, rounds=None, settle=0):
    """Interleaved timing of several callables (dict name -> fn).

    The repeats are split into `rounds` blocks (default: one repeat per
    round); each round runs every fn for one block, after `settle` untimed
    calls. Load from other processes thus hits all fns alike, while the
    thread pools of one runtime (which spin for a while after each call) do
    not bleed into another's timed calls. A block stops early once it has
    used its share of `budget_s`. Returns name -> Stats, or the exception
    a fn raised (it is then dropped from later rounds)."""
    results, live = {}, dict(fns)
    for name, fn in list(live.items()):
        try:
            for _ in range(warmup):
                fn()
        except Exception as e:  # noqa: BLE001 - reported per fn
            results[name] = e
            del live[name]
    rounds = max(1, min(rounds or repeats, repeats))
    per_round = -(-repeats // rounds)
    min_per_round = max(1, -(-min_repeats // rounds))
    samples = {name: [] for name in live}
    for _ in range(rounds):
        for name, fn in list(live.items()):
            try:
                for _ in range(settle):
                    fn()
                spent = 0.0
                for i in range(per_round):
                    t0 = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t0
                    samples[name].append(dt)
                    spent += dt
                    if budget_s is not None and spent > budget_s / rounds and i + 1 >= min_per_round:
                        break
            except Exception as e:  # noqa: BLE001
                results[name] = e
                del live[name]
    for name in live:
        results[name] = Stats.of(samples[name])
    return results


def subprocess_fn(argv, env=None, cwd=None, timeout=600):
    """A callable running argv; raises with the child's last stderr line on failure."""
    def once():
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            raise RuntimeError(f"{os.path.basename(argv[0])} exited {r.returncode}: {tail}")
    return once


# ---- memory ---------------------------------------------------------------

def rss_bytes(pid):
    """Resident set size of a process (psutil when installed, else /proc)."""
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss
    except ImportError:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RSS_SNIPPET = """
def _rss():
    import os
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
"""


@dataclasses.dataclass
class PeakResult:
    peak: int | None          # max resident bytes of the child (kernel high-water mark)
    polled_peak: int          # max seen by polling (a cross-check)
    report: dict              # what the child printed as `BENCH key=value` lines
    aborted: str | None       # why the child was killed, or None
    returncode: int
    stderr_tail: str


def run_with_peak_memory(source, limit_bytes, timeout_s=900, poll_s=0.02):
    """Run Python `source` in a child process; poll its RSS and kill it above
    limit_bytes. Peak comes from /usr/bin/time -v ("Maximum resident set
    size") when that exists, else from polling. The child reports values by
    printing lines `BENCH key=value`."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RSS_SNIPPET + source)
        script = f.name
    use_time = os.path.exists("/usr/bin/time")
    argv = ([sys.executable, script] if not use_time else ["/usr/bin/time", "-v", sys.executable, script])
    out_f = tempfile.TemporaryFile("w+")
    err_f = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(argv, stdout=out_f, stderr=err_f, text=True)
    polled, aborted = 0, None
    start = time.perf_counter()
    try:
        while proc.poll() is None:
            rss = _tree_rss(proc.pid)
            polled = max(polled, rss)
            if rss > limit_bytes:
                aborted = f"killed at {rss / 2**30:.1f} GiB resident (limit {limit_bytes / 2**30:.0f} GiB)"
                _kill_tree(proc)
                break
            if time.perf_counter() - start > timeout_s:
                aborted = f"killed after {timeout_s} s"
                _kill_tree(proc)
                break
            time.sleep(poll_s)
        proc.wait()
    finally:
        os.unlink(script)
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    report = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            k, _, v = line[6:].partition("=")
            report[k.strip()] = float(v)
    peak = None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    if m:
        peak = int(m.group(1)) * 1024
    elif "peak" in report:
        peak = int(report["peak"])
    tail = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\t")]
    return PeakResult(peak if not aborted else None, polled, report, aborted, proc.returncode,
                      tail[-1] if tail else "")


def _children(pid):
    try:
        import psutil
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:
            return []
        return kids + [g for k in kids for g in _children(k)]
    except Exception:  # noqa: BLE001 - the process may be gone
        return []


def _tree_rss(pid):
    total = 0
    for p in [pid] + _children(pid):
        try:
            total += rss_bytes(p)
        except Exception:  # noqa: BLE001 - gone between listing and reading
            pass
    return total


def _kill_tree(proc):
    for p in reversed(_children(proc.pid)):
        try:
            os.kill(p, 9)
        except OSError:
            pass
    proc.kill()


# ---- background load ------------------------------------------------------

def _busy_seconds():
    """CPU seconds all processes have used (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class BackgroundLoad:
    """How many cores other processes kept busy, on average, between start()
    and cores(): the machine's busy time minus this process's (and its
    waited-for children's)."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_seconds(), _own_seconds()

    def cores(self):
        busy = _busy_seconds()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.t0
        return max(0.0, (busy - self.busy0) - (_own_seconds() - self.own0)) / max(wall, 1e-9)
