"""Features of a PaddleClas-made RecModel checkpoint: PaddleClas vs prodrec.

Step 1 runs in an environment with ``paddlepaddle`` and ``paddleclas`` (no prodrec needed): it builds
PaddleClas's own ``RecModel`` (ResNet50_vd + FC neck 512 + ArcMargin), gives its BatchNorm layers
non-trivial statistics, saves it with ``paddle.save`` and writes its eval-mode 512-d features of a
random 224 px batch. Step 2 runs with prodrec: it loads the file with ``prodrec.paddle.embedder_from_paddleclas`` and
prints the largest difference.

    /path/to/paddle-env/bin/python benchmarks/paddle_parity.py make --output parity/
    python benchmarks/paddle_parity.py compare --output parity/
"""
import argparse
import sys
from pathlib import Path

import numpy as np


def make(out: Path) -> None:
    import paddle
    import paddleclas

    sys.path.insert(0, str(Path(paddleclas.__file__).parent))  # the pip package ships ppcls inside
    from ppcls.utils import logger

    logger.init_logger()
    from ppcls.arch import build_model

    arch = {"name": "RecModel", "infer_output_key": "features", "infer_add_softmax": False,
            "Backbone": {"name": "ResNet50_vd", "pretrained": False}, "BackboneStopLayer": {"name": "flatten"},
            "Neck": {"name": "FC", "embedding_size": 2048, "class_num": 512},
            "Head": {"name": "ArcMargin", "embedding_size": 512, "class_num": 100, "margin": 0.15, "scale": 30}}
    paddle.seed(0)
    rng = np.random.default_rng(0)
    model = build_model({"Arch": arch})
    state = model.state_dict()
    for name, value in state.items():
        shape = value.shape
        if name.endswith("_mean") or name.endswith("bn.bias"):
            state[name] = paddle.to_tensor(rng.normal(0, 0.1, shape).astype("float32"))
        elif name.endswith("_variance"):
            state[name] = paddle.to_tensor(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name.endswith("bn.weight"):  # small last-BN scales keep the residual sums of a trained net
            low, high = (0.05, 0.2) if name.endswith("conv2.bn.weight") else (0.5, 1.5)
            state[name] = paddle.to_tensor(rng.uniform(low, high, shape).astype("float32"))
    model.set_state_dict(state)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(out / "recmodel.pdparams"))
    images = rng.normal(size=(2, 3, 224, 224)).astype("float32")
    np.save(out / "images.npy", images)
    np.save(out / "features.npy", model(paddle.to_tensor(images))["features"].numpy())
    print(f"wrote {out / 'recmodel.pdparams'} and PaddleClas's features")


def compare(out: Path) -> None:
    import torch

    from prodrec.paddle import embedder_from_paddleclas

    model = embedder_from_paddleclas(out / "recmodel.pdparams").eval()
    with torch.no_grad():
        ours = model(torch.from_numpy(np.load(out / "images.npy"))).numpy()
    theirs = np.load(out / "features.npy")
    print(f"max abs difference {np.abs(ours - theirs).max():.3g} (features up to {np.abs(theirs).max():.3g})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["make", "compare"])
    parser.add_argument("--output", type=Path, default=Path("paddle-parity"))
    args = parser.parse_args()
    make(args.output) if args.step == "make" else compare(args.output)
