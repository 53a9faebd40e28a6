"""LaunchDarkly's own REST client (launchdarkly-api on PyPI, pinned in
scripts/python-requirements.txt) lists segments page by page and reads a
big-segment export back from the LaunchDarkly API at BASE_URL.

Run by tests/it/emulator_api.rs against ld-emulator:
    python ld_client_reads_back.py BASE_URL TOKEN PROJECT ENV SEGMENT
Prints one JSON object: the listed keys, the totalCount, the export's
final status and the file's lines.
"""

import json
import sys
import time
import urllib.request

import launchdarkly_api
from launchdarkly_api.api import segments_api


def main():
    base, token, project, env, segment = sys.argv[1:6]
    config = launchdarkly_api.Configuration(host=base)
    config.api_key["ApiKey"] = token
    client = launchdarkly_api.ApiClient(config)
    client.set_default_header("LD-API-Version", "20240415")
    api = segments_api.SegmentsApi(client)

    keys, total, offset = [], None, 0
    while True:
        page = api.get_segments(project, env, limit=2, offset=offset)
        total = page.total_count
        keys += [s.key for s in page.items]
        if not page.items or "next" not in (page.links or {}):
            break
        offset += len(page.items)

    started = api.create_big_segment_export_with_http_info(project, env, segment)
    # Header names are case-insensitive (HTTP/1.1 servers may send them lowercase).
    headers = {k.lower(): v for k, v in (started.headers or {}).items()}
    location = headers["location"]
    export_id = location.rstrip("/").rsplit("/", 1)[-1]
    statuses = []
    deadline = time.time() + 30
    while True:
        export = api.get_big_segment_export(project, env, segment, export_id)
        statuses.append(export.status)
        if export.status in ("completed", "complete") or time.time() > deadline:
            break
        time.sleep(0.05)
    href = export.links["file"].href
    request = urllib.request.Request(base + href, headers={"Authorization": token})
    with urllib.request.urlopen(request) as resp:
        lines = resp.read().decode("utf-8").splitlines()
        content_type = resp.headers.get("Content-Type")

    print(json.dumps({
        "keys": keys,
        "total": total,
        "statuses": statuses,
        "segment_key": export.segment_key,
        "content_type": content_type,
        "lines": lines,
    }))


if __name__ == "__main__":
    main()
