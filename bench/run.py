"""Run every speed benchmark and write bench/RESULTS.md: `python -m bench.run [--quick] [--only NAME ...]`.

The default run takes about 20-25 minutes (the tail memory row alone about 10); `--quick` about 4-5
minutes with smaller sizes. One embedded PostgreSQL and one nats-server are started for the whole run;
every benchmark prints its tables and replaces only its own section of RESULTS.md (between
`<!-- bench:NAME -->` markers), so the ETA accuracy section (`python -m bench.eta`) and any other section
are left as they are.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import fanout, ingest, latency, relay, replay, tail
from bench.common import machine_section, nats, postgres, raise_nofile, write_section

NAMES = ("ingest", "fanout", "latency", "replay", "relay", "tail")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: about 2-3 minutes")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these benchmarks")
    args = parser.parse_args()
    chosen = args.only or list(NAMES)
    command = "python -m bench.run" + (" --quick" if args.quick else "")
    if args.only:
        command += " --only " + " ".join(chosen)
    raise_nofile(65_536)
    started = time.monotonic()
    write_section("machine", machine_section(command), top=True)
    with postgres() as pg, nats() as nats_server:
        runs: dict[str, Any] = {
            "ingest": lambda: ingest.run(args.quick, pg, command),
            "fanout": lambda: fanout.run(args.quick, command),
            "latency": lambda: latency.run(args.quick, pg, nats_server, command),
            "replay": lambda: replay.run(args.quick, pg, command),
            "relay": lambda: relay.run(args.quick, pg, nats_server, command),
            "tail": lambda: tail.run(args.quick, command),
        }
        for name in chosen:
            t0 = time.monotonic()
            print(f"\n=== {name} ===", flush=True)
            runs[name]()
            print(f"=== {name}: {time.monotonic() - t0:.0f} s ===", flush=True)
    print(f"\nall done in {time.monotonic() - started:.0f} s; results in bench/RESULTS.md", flush=True)


if __name__ == "__main__":
    main()
