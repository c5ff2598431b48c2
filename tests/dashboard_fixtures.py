"""A small checkpoint folder on the synthetic set: two checkpoints with cached certifications."""
import shutil
from pathlib import Path

import numpy as np

from csrs_core.cases import write_case_file
from csrs_core.sampling.stage_a import counts_record
from csrs_core.data import load_dataset
from csrs_core.training.loop import TrainConfig, train


def build_case(root: Path, base_checkpoint: Path) -> Path:
    case = root / "synth"
    case.mkdir(parents=True)
    shutil.copy(base_checkpoint, case / "cohen.pt")
    train(TrainConfig(method="cs-macer", dataset="synthetic", out=str(case / "csmacer"), arch="resnet8",
                      epochs=1, batch=32, lr=0.01, cost="seedwise:1", gauss_num=4, max_steps_per_epoch=3,
                      init=str(base_checkpoint), threads=2))
    data = load_dataset("synthetic", "test")
    for name in ("cohen", "csmacer"):
        counts_record(case / f"{name}.pt", data, n0=20, n=100, batch=400)
    data.save_sample(case / "test-sample.npz")
    write_case_file(case, question="can a grey image be pushed to another class?", cost="seedwise:3")
    return root


APP = str(Path(__file__).resolve().parents[1] / "csrs_core" / "dashboard" / "app.py")


def open_app(root: Path, monkeypatch):
    """The dashboard on checkpoint folder `root` under AppTest, run once, without an exception."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def open_train_page(root: Path, checkpoint: Path, monkeypatch):
    """The dashboard's Train page on checkpoint folder `root` holding `checkpoint` as synth/cohen.pt,
    without an exception."""
    case = root / "synth"
    case.mkdir(parents=True)
    shutil.copy(checkpoint, case / "cohen.pt")
    at = open_app(root, monkeypatch)
    at.switch_page("views/train.py").run()
    assert not at.exception, at.exception
    return at


def click_grid(at, matrix) -> None:
    """What the browser sends when a cell of the cost grid is clicked (the grid's one-shot trigger
    "matrix" with the whole matrix), then the rerun; AppTest has no handle on browser-side elements."""
    import json
    from streamlit.proto.WidgetStates_pb2 import WidgetState
    from streamlit.runtime.state.session_state import STREAMLIT_INTERNAL_KEY_PREFIX
    [grid] = at.get("bidi_component")
    states = at._tree.get_widget_states()
    trigger = WidgetState(id=f"{STREAMLIT_INTERNAL_KEY_PREFIX}_{grid.proto.id}__events",
                          json_trigger_value=json.dumps([{"event": "matrix", "value": np.asarray(matrix).tolist()}]))
    states.widgets.append(trigger)
    at._run(widget_state=states)


def build_large_case(root: Path, m: int = 1000, examples: int = 100) -> Path:
    """A case folder `root/many` of one untrained resnet8 over m classes with a cached certification of
    `examples` random 16 x 16 images (n0 = 8, n = 24): the scale of an ImageNet-sized class list."""
    import torch
    from csrs_core.data.images import ImageSet
    from csrs_core.models.architectures import build_model
    from csrs_core.models.checkpoints import save_checkpoint
    case = root / "many"
    case.mkdir(parents=True)
    classes = [f"c{i}" for i in range(m)]
    mean, std = [0.5] * 3, [0.25] * 3
    torch.manual_seed(0)
    meta = {"arch": "resnet8", "classes": classes, "dataset": "many", "sigma": 0.25, "method": "gaussian",
            "mean": mean, "std": std}
    save_checkpoint(case / "wide.pt", build_model("resnet8", m, mean, std), meta)
    gen = torch.Generator().manual_seed(0)
    data = ImageSet("many", "test", torch.randint(0, 256, (examples, 3, 16, 16), dtype=torch.uint8, generator=gen),
                    torch.randint(0, m, (examples,), generator=gen), classes, mean=tuple(mean), std=tuple(std))
    counts_record(case / "wide.pt", data, n0=8, n=24, batch=256)
    return root
