#!/usr/bin/env python3
"""Merges the shard results of a kvshrink batch array job into one file.

    merge-results.py INPUT OUTPUT RESULTS...

INPUT is the requests JSONL the array split (every non-blank line an OpenAI batch request with a
unique "custom_id"); RESULTS are the shards' result files (kvshrink batch -o), in any order.
OUTPUT gets one result line per request, in INPUT's order, byte for byte as kvshrink wrote it.
It is written only when every custom_id has exactly one result: otherwise nothing is written and
the exit code is 1, with what is missing, repeated, unknown or torn (a torn last line means that
shard's task did not finish: re-run it with the same command, kvshrink batch repairs the line).
"""
import json
import os
import sys


def fail(message):
    print(f"merge-results: {message}", file=sys.stderr)
    sys.exit(1)


def custom_ids_in_order(path):
    ids, seen = [], set()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                custom_id = json.loads(line)["custom_id"]
            except (ValueError, KeyError, TypeError):
                fail(f"{path}:{number}: not a JSON request with a custom_id")
            if not isinstance(custom_id, str):
                fail(f"{path}:{number}: custom_id is not a string")
            if custom_id in seen:
                fail(f"{path}:{number}: custom_id {custom_id!r} appears twice in the input")
            seen.add(custom_id)
            ids.append(custom_id)
    return ids


def read_results(paths, wanted):
    """custom_id -> raw line; problems listed rather than stopping at the first."""
    results, where, problems = {}, {}, []
    for path in paths:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                custom_id = json.loads(line).get("custom_id")
            except (ValueError, AttributeError):
                torn = " (torn last line: re-run that shard's task)" if number == len(lines) else ""
                problems.append(f"{path}:{number}: not a JSON result{torn}")
                continue
            if custom_id not in wanted:
                problems.append(f"{path}:{number}: custom_id {custom_id!r} is not in the input")
            elif custom_id in results:
                problems.append(f"{path}:{number}: second result for {custom_id!r} (first: {where[custom_id]})")
            else:
                results[custom_id] = line
                where[custom_id] = f"{path}:{number}"
    return results, problems


def main(argv):
    if len(argv) < 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    input_path, output_path, result_paths = argv[1], argv[2], argv[3:]
    order = custom_ids_in_order(input_path)
    results, problems = read_results(result_paths, set(order))
    missing = [custom_id for custom_id in order if custom_id not in results]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        problems.append(f"{len(missing)} of {len(order)} requests have no result: {shown}")
    if problems:
        for problem in problems:
            print(f"merge-results: {problem}", file=sys.stderr)
        return 1
    temporary = f"{output_path}.tmp.{os.getpid()}"
    with open(temporary, "wb") as out:
        for custom_id in order:
            out.write(results[custom_id] + b"\n")
    os.replace(temporary, output_path)
    print(f"merge-results: {len(order)} results in input order -> {output_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
