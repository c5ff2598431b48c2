import pickle

import pytest
import torch

from csrs_core.models.architectures import architectures, build_model
from csrs_core.models.checkpoints import CheckpointError, load_model, read_meta, save_checkpoint

META = {"arch": "resnet8", "classes": ["a", "b", "c"], "dataset": "synthetic", "sigma": 0.25,
        "method": "gaussian", "mean": [0.5] * 3, "std": [0.25] * 3}


def test_registry_and_shapes():
    assert {"resnet8", "resnet20", "resnet56", "resnet110", "resnet18"} <= set(architectures())
    for arch, size in (("resnet20", 32), ("resnet18", 64)):
        assert build_model(arch, 7, [0.5] * 3, [0.2] * 3)(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_pooled_resnet_is_the_resnet_on_the_pooled_image():
    pooled = build_model("resnet8-pool4", 2, [0.5] * 3, [0.2] * 3).eval()
    plain = build_model("resnet8", 2, [0.5] * 3, [0.2] * 3).eval()
    plain[1].load_state_dict(pooled[1][1].state_dict())
    x = torch.rand(3, 3, 64, 64)
    torch.testing.assert_close(pooled(x), plain(torch.nn.functional.avg_pool2d(x, 4)))


def test_round_trip(tmp_path):
    model = build_model("resnet8", 3, META["mean"], META["std"])
    save_checkpoint(tmp_path / "m.pt", model, META)
    loaded, meta = load_model(tmp_path / "m.pt")
    assert meta["classes"] == ["a", "b", "c"] and "code_version" in meta
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model.eval()(x))


class Exploit:
    def __reduce__(self):
        return (open, ("/tmp/csrs-pwned-marker", "w"))


def test_crafted_pickle_is_refused_without_running(tmp_path):
    import os
    marker = "/tmp/csrs-pwned-marker"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": "csrs-checkpoint-v1", "meta_json": "{}", "state_dict": {}, "x": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    assert not os.path.exists(marker)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        load_model(raw)
    assert not os.path.exists(marker)


def test_corrupt_truncated_foreign_and_mismatched(tmp_path):
    model = build_model("resnet8", 3, META["mean"], META["std"])
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, META)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save(model.state_dict(), tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not a CSRS checkpoint"):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="trained on 3 classes but the data has 10"):
        load_model(good, num_classes=10)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_meta(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "wrong.pt", build_model("resnet20", 3, META["mean"], META["std"]), META)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "wrong.pt")


def test_a_flipped_byte_in_a_saved_tensor_is_refused_as_corrupt(tmp_path):
    """save_checkpoint stores a digest of the tensors; one changed byte in the file's largest tensor (the zip
    entry's data, found from its local header) makes every load refuse it, naming it corrupt."""
    import struct
    import zipfile
    path = tmp_path / "a.pt"
    meta = {"arch": "resnet8", "classes": list("abcd"), "dataset": "synthetic", "sigma": 0.25,
            "method": "gaussian", "mean": [0.5] * 3, "std": [0.25] * 3}
    save_checkpoint(path, build_model("resnet8", 4, meta["mean"], meta["std"]), meta)
    assert len(read_meta(path)["tensors_sha256"]) == 64
    info = max((i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="is corrupt: its weights do not match the digest"):
        load_model(path)
