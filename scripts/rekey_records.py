"""Re-key certification records written before the counts store's format csrs-counts-v2.

The counts are kept as they are (no resampling): a legacy record's metadata already names the
checkpoint digest, data, sigma, n0, n, seed and precision it was made with; this adds the device
type (from its 'device' field) and the sampling scheme (csrs-noise-v1, the only scheme before v2),
checks that the checkpoint beside it still has the recorded digest (else the record is left alone
and reported stale), and rewrites it under its new key name with a digest over counts and metadata.

Usage: python scripts/rekey_records.py checkpoints/ [more folders]"""
import json
import sys
from pathlib import Path

import numpy as np

from csrs_core.models.checkpoints import file_digest
from csrs_core.sampling.store import FORMAT, key_name, write_record

LEGACY_SCHEME = "csrs-noise-v1"


def rekey(record: Path) -> str:
    with np.load(record, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") == FORMAT:
        return "already current"
    checkpoint = record.parent.with_suffix(".pt")
    if not checkpoint.exists() or file_digest(checkpoint) != meta["checkpoint_sha256"]:
        return "left alone: its checkpoint is missing or has other content (stale)"
    meta.update(device_type=meta["device"].split(":")[0], scheme=LEGACY_SCHEME)
    meta["key"] = key_name(meta)
    target = record.with_name(f"{meta['key']}.npz")
    write_record(target, arrays["counts0"], arrays["counts"], arrays["labels"], arrays["indices"], meta)
    if target != record:
        record.unlink()
    return f"re-keyed as {target.name}"


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        for record in sorted(Path(folder).rglob("*.certs/*.npz")):
            if ".partial" not in record.name and ".rank" not in record.name:
                print(f"{record}: {rekey(record)}")
