#!/usr/bin/env python3
"""Bytes each fjall partition writes to segment files while a server runs, against what stays.

Polls <data-dir>/fjall/partitions/*/segments every 50 ms for SECONDS and keeps each segment
file's largest size; every segment written (by a flush or a compaction) counts once. Prints,
per partition, the MB written, the MB of segments still live at the end and their ratio (the
write amplification of flush + compaction; the journal is not counted).
    python3 bench/write-amp.py DATA_DIR SECONDS      (start it together with the load)
"""
import collections
import os
import sys
import time

root, secs = sys.argv[1], float(sys.argv[2])
parts_dir = os.path.join(root, "fjall", "partitions")
largest = {}
end = time.time() + secs
while time.time() < end:
    for part in os.listdir(parts_dir) if os.path.isdir(parts_dir) else []:
        seg_dir = os.path.join(parts_dir, part, "segments")
        for name in os.listdir(seg_dir) if os.path.isdir(seg_dir) else []:
            try:
                size = os.path.getsize(os.path.join(seg_dir, name))
            except FileNotFoundError:
                continue
            largest[(part, name)] = max(size, largest.get((part, name), 0))
    time.sleep(0.05)

written, live = collections.Counter(), collections.Counter()
for (part, name), size in largest.items():
    written[part] += size
    path = os.path.join(parts_dir, part, "segments", name)
    if os.path.exists(path):
        live[part] += os.path.getsize(path)
for part, total in written.most_common():
    amp = total / live[part] if live[part] else float("inf")
    print(f"{part:12s} written {total / 1e6:8.1f} MB, live {live[part] / 1e6:7.1f} MB, amplification {amp:5.2f}")
print(f"{'all':12s} written {sum(written.values()) / 1e6:8.1f} MB, live {sum(live.values()) / 1e6:7.1f} MB")
