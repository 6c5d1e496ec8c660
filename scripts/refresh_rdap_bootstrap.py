"""Replace the shipped RDAP bootstrap data with IANA's current file (needs the internet).

    python scripts/refresh_rdap_bootstrap.py [--url URL]

It refuses a file that is not an RFC 9224 bootstrap (no `services` list of [TLDs, URLs]).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

IANA = "https://data.iana.org/rdap/dns.json"
TARGET = Path(__file__).resolve().parents[1] / "healthcheck" / "probes" / "data" / "rdap_dns.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=IANA)
    url = parser.parse_args().url
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (an https URL)
        data = json.load(answer)
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, list) for x in s)
        for s in services
    ):
        print(f"{url} is not an RDAP bootstrap file (no services list)", file=sys.stderr)
        return 1
    TARGET.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{TARGET}: {sum(len(tlds) for tlds, _ in services)} TLDs, {data.get('publication')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
