"""PaddleClas ``.pdparams`` weights -> an :class:`~prodrec.models.Embedder`, without paddle.

A ``.pdparams`` file is a pickle of ``{parameter name: numpy array}`` plus the key
``StructuredToParameterName@@``. It is read with a restricted unpickler that admits only numpy
array reconstruction and plain containers, so no code from the file ever runs. The names of
PaddleClas's ``ResNet50_vd`` (``ppcls/arch/backbone/legendary_models/resnet.py``) are mapped onto
timm ``resnet50d``; the ``RecModel`` FC neck (``neck.fc``) becomes the Embedder's neck, and the
head (``head.weight`` of ArcMargin, ``head.fc`` of FC) is returned in the conversion info.
"""
from __future__ import annotations

import collections
import os
import pickle
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np
import timm
import torch
from prodrec.utils import ProdrecError, brief

if TYPE_CHECKING:
    from prodrec.models import Embedder

__all__ = [
    "PaddleWeightsError",
    "load_pdparams",
    "convert_paddle_state",
    "load_paddleclas",
    "embedder_from_paddleclas",
]

BACKBONE = "resnet50d"  # PaddleClas ResNet50_vd
NAME_TABLE_KEY = "StructuredToParameterName@@"
_MAX_SHOWN = 20
_BN = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}
_STEM = (("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1"))  # (conv, bn) of stem.0-2
_IMAGENET_CLASSIFIER = ("fc.weight", "fc.bias")  # ResNet_vd's self.fc, dropped


class PaddleWeightsError(ProdrecError):
    """A ``.pdparams`` file that cannot be read safely or does not fit the model."""


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # Pickle protocol 2 stores the bytes of an array as ``_codecs.encode(text, 'latin1')``.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {brief(encoding)} (only 'latin1' is admitted)")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, whatever its module
_ADMITTED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # protocol 2 spells the builtins module "__builtin__"
    **{(module, kind.__name__): kind for module in ("builtins", "__builtin__") for kind in (dict, list, tuple)},
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ADMITTED:
            raise PaddleWeightsError(
                f"refusing to load {self.source}: it references {module}.{name}; a .pdparams holds only "
                "arrays (numpy) and plain containers, so this file is not Paddle weights or was tampered with"
            )
        return _ADMITTED[(module, name)]


def load_pdparams(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """Read a ``.pdparams`` file into ``{name: array}`` without running code from it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Paddle weights file {os.fspath(path)!r} not found")
    with open(path, "rb") as handle:
        try:
            params = _ArraysOnlyUnpickler(handle, os.fspath(path)).load()
        except PaddleWeightsError:
            raise
        except Exception as error:  # a corrupt pickle fails in many ways; all mean "not a .pdparams"
            raise PaddleWeightsError(f"{path} is not a readable .pdparams pickle ({error})") from error
    if isinstance(params, dict):
        params.pop(NAME_TABLE_KEY, None)
    _check_arrays(params, str(path))
    return params


def _check_arrays(params: Any, source: str) -> None:
    if not isinstance(params, dict):
        raise PaddleWeightsError(f"{source} holds a {type(params).__name__}, not a dict of named arrays")
    bad = [f"{brief(key)}: {type(value).__name__}" for key, value in params.items()
           if not isinstance(key, str) or not isinstance(value, np.ndarray)]
    if bad:
        raise PaddleWeightsError(f"{source}: every entry must be a numpy array under a str name; not so for"
                                 f"{_listing(bad)}")


def convert_paddle_state(params: Dict[str, np.ndarray]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Map PaddleClas ResNet50_vd / RecModel parameters onto an :class:`Embedder` state dict.

    Args:
        params: ``{name: array}`` as returned by :func:`load_pdparams`.

    Returns:
        ``(state, info)``: ``state`` holds ``backbone.*`` (timm ``resnet50d``) and, when the file has
        an FC neck, ``neck.weight``/``neck.bias``. ``info`` has ``kind`` (``"recmodel"`` for names
        prefixed ``backbone.``, else ``"imagenet"``), ``tensors`` (how many were converted),
        ``embedding_size`` (``None`` without a neck), ``dropped`` (the ImageNet classifier's
        names) and ``head``: ``None`` or ``{"type": "margin" | "fc", "num_classes", "state_dict"}``
        whose state dict loads into :class:`~prodrec.losses.ArcMarginLoss` (``W [embedding,
        classes]``, also the layout of CosMargin/CircleMargin) or
        :class:`~prodrec.losses.FCClassifierLoss` (``fc.weight``/``fc.bias``).

    Raises:
        PaddleWeightsError: listing every missing, extra or wrongly shaped tensor at once.
    """
    _check_arrays(params, "params")
    kind = "recmodel" if any(name.startswith("backbone.") for name in params) else "imagenet"
    prefix = "backbone." if kind == "recmodel" else ""
    with torch.device("meta"):
        reference = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    expected = reference.state_dict()
    table = _name_table(reference)

    state: Dict[str, torch.Tensor] = {}
    extra: List[str] = []
    wrong: List[str] = []
    dropped = [name for name in _IMAGENET_CLASSIFIER if kind == "imagenet" and name in params]
    for name, array in params.items():
        if name in dropped or (kind == "recmodel" and name.startswith(("neck.", "head."))):
            continue
        target = table.get(name[len(prefix):]) if name.startswith(prefix) else None
        if target is None:
            extra.append(name)
        elif tuple(array.shape) != tuple(expected[target].shape) or array.dtype.kind != "f":
            wrong.append(f"{name} {array.dtype}{list(array.shape)} (-> {target}, "
                         f"needs float{list(expected[target].shape)})")
        else:
            state[f"backbone.{target}"] = _tensor(array)
    missing = [f"{prefix}{name}" for name in table if f"{prefix}{name}" not in params]
    for name in expected:
        if name.endswith("num_batches_tracked"):
            state[f"backbone.{name}"] = torch.zeros((), dtype=torch.long)

    embedding_size, head = None, None
    if kind == "recmodel":
        embedding_size, head = _neck_and_head(params, state, extra, wrong, missing, reference.num_features)
    problems = ([f"missing: {name}" for name in missing] + [f"extra: {name}" for name in extra]
                + [f"wrong shape or type: {line}" for line in wrong])
    if problems:
        raise PaddleWeightsError(f"the weights do not fit PaddleClas ResNet50_vd ({BACKBONE}) "
                                 f"+ FC neck:{_listing(problems)}")
    info = {"kind": kind, "tensors": len(params) - len(dropped), "embedding_size": embedding_size,
            "dropped": dropped, "head": head}
    return state, info


def _name_table(reference: torch.nn.Module) -> Dict[str, str]:
    """PaddleClas ResNet_vd parameter name -> timm name, for every tensor of ``reference``."""
    table: Dict[str, str] = {}

    def conv_bn(paddle: str, conv: str, bn: str) -> None:
        table[f"{paddle}.conv.weight"] = f"{conv}.weight"
        table.update({f"{paddle}.bn.{ours}": f"{bn}.{theirs}" for ours, theirs in _BN.items()})

    for index, (conv, bn) in enumerate(_STEM):
        conv_bn(f"stem.{index}", conv, bn)
    blocks = [f"layer{stage}.{index}" for stage in range(1, 5)
              for index in range(len(reference.get_submodule(f"layer{stage}")))]
    for index, block in enumerate(blocks):  # PaddleClas numbers the blocks of all stages in one Sequential
        for unit in range(3):
            conv_bn(f"blocks.{index}.conv{unit}", f"{block}.conv{unit + 1}", f"{block}.bn{unit + 1}")
        if reference.get_submodule(block).downsample is not None:
            conv_bn(f"blocks.{index}.short", f"{block}.downsample.1", f"{block}.downsample.2")
    tensors = {name for name in reference.state_dict() if not name.endswith("num_batches_tracked")}
    assert set(table.values()) == tensors and len(table) == len(tensors), "mapping does not cover the model"
    return table


def _neck_and_head(params: Dict[str, np.ndarray], state: Dict[str, torch.Tensor], extra: List[str],
                   wrong: List[str], missing: List[str], num_features: int) -> Tuple[Optional[int], Optional[dict]]:
    """Convert ``neck.fc`` and the head (Paddle ``Linear`` weights are ``[in, out]``), noting problems."""
    def shape(name: str) -> Tuple[int, ...]:
        return tuple(params[name].shape)

    def linear_fits(weight: str, bias: str, width: int) -> bool:
        return len(shape(weight)) == 2 and shape(weight)[0] == width and shape(bias) == shape(weight)[1:]

    neck = ("neck.fc.weight", "neck.fc.bias")
    extra += [name for name in params if name.startswith("neck.") and name not in neck]
    embedding_size = None
    if all(name in params for name in neck):
        if linear_fits(*neck, num_features):
            embedding_size = shape("neck.fc.weight")[1]
            state["neck.weight"] = _tensor(params["neck.fc.weight"]).T.contiguous()
            state["neck.bias"] = _tensor(params["neck.fc.bias"])
        else:
            wrong.append(f"neck.fc.weight {list(shape(neck[0]))} / neck.fc.bias {list(shape(neck[1]))} "
                         f"(needs [{num_features}, E] / [E])")
    elif any(name in params for name in neck):
        missing += [name for name in neck if name not in params]

    width = embedding_size or num_features  # without a neck the head sits on the backbone features
    head_names = sorted(name for name in params if name.startswith("head."))
    if head_names == ["head.weight"]:
        if len(shape("head.weight")) == 2 and shape("head.weight")[0] == width:
            return embedding_size, {"type": "margin", "num_classes": shape("head.weight")[1],
                                    "state_dict": {"W": _tensor(params["head.weight"])}}
        wrong.append(f"head.weight {list(shape('head.weight'))} (needs [{width}, classes])")
    elif head_names == ["head.fc.bias", "head.fc.weight"]:
        if linear_fits("head.fc.weight", "head.fc.bias", width):
            return embedding_size, {"type": "fc", "num_classes": shape("head.fc.weight")[1], "state_dict": {
                "fc.weight": _tensor(params["head.fc.weight"]).T.contiguous(),
                "fc.bias": _tensor(params["head.fc.bias"])}}
        wrong.append(f"head.fc.weight {list(shape('head.fc.weight'))} / head.fc.bias "
                     f"{list(shape('head.fc.bias'))} (needs [{width}, C] / [C])")
    else:
        extra += head_names
    return embedding_size, None


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def load_paddleclas(
    path: Union[str, os.PathLike], *, image_size: Optional[int] = None
) -> Tuple["Embedder", Dict[str, Any]]:
    """``(Embedder, info)`` from a ``.pdparams`` file; ``info`` as in :func:`convert_paddle_state`.

    The neck comes from the file (``embedding_size`` follows it); a file without one (a bare
    ImageNet ResNet50_vd) gets a newly initialised 512-d neck.
    """
    from prodrec.models import Embedder

    state, info = convert_paddle_state(load_pdparams(path))
    model = Embedder(BACKBONE, embedding_size=info["embedding_size"] or 512, image_size=image_size)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"neck.weight", "neck.bias"}, result
    return model, info


def embedder_from_paddleclas(path: Union[str, os.PathLike], *, image_size: Optional[int] = None) -> "Embedder":
    """An :class:`Embedder` with the weights of a PaddleClas ``.pdparams`` file (see
    :meth:`Embedder.from_paddleclas`)."""
    return load_paddleclas(path, image_size=image_size)[0]


def _listing(lines: List[str]) -> str:
    shown = "".join(f"\n  {line}" for line in lines[:_MAX_SHOWN])
    more = len(lines) - _MAX_SHOWN
    return shown + (f"\n  ... and {more} more ({len(lines)} in all)" if more > 0 else "")
