#!/usr/bin/env python3
"""Seeds fuzz/corpus/decode/ from tests/corpus/*.json (run from the workspace root).

Each case becomes one input in the target's layout: a topic selector byte, then the
payload (see fuzz_targets/decode.rs). payload_generate cases are skipped (too large
to be useful seeds).
"""
import json, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "fuzz" / "corpus" / "decode"
out.mkdir(parents=True, exist_ok=True)
selectors = {"gas/D1/M1/up": b"\x00", "gas/D1/M2/up": b"\x01", "gas/D1/M9/up": b"\x02"}
n = 0
for path in sorted((root / "tests" / "corpus").glob("*.json")):
    case = json.loads(path.read_text())
    topic = case["topic"]
    head = selectors.get(topic, b"\x03" + topic.encode() + b"\n")
    payloads = [json.dumps(p, separators=(",", ":")).encode() for p in case.get("before", [])]
    if "payload" in case:
        payloads.append(json.dumps(case["payload"], separators=(",", ":")).encode())
    elif "payload_text" in case:
        payloads.append(case["payload_text"].encode())
    elif "payload_hex" in case:
        payloads.append(bytes.fromhex(case["payload_hex"]))
    for i, p in enumerate(payloads):
        (out / f"{path.stem}-{i}").write_bytes(head + p)
        n += 1
print(f"{n} seeds in {out}")
