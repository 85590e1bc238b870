"""Translating a PaddleClas ``DataLoader`` section and its transform ops (see :mod:`prodrec.paddle.config`)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from prodrec.paddle.reader import Notes, Section
from prodrec.utils import brief

__all__ = ["translate_dataloader", "PRODREC_ERASING"]

PRODREC_ERASING = {"sl": 0.02, "sh": 0.4, "r1": 0.3}  # prodrec.data.train_transform's erasing box


@dataclass
class _Pipeline:
    """What a ``transform_ops`` list amounts to in prodrec's terms."""

    size: Optional[int] = None
    flip: float = 0.0
    erasing: float = 0.0
    normalize: Optional[tuple] = None  # (scale, mean, std)
    normalize_key: str = ""


def _side(op: Section, name: str) -> Optional[int]:
    value = op.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        if value[0] != value[1]:
            op.notes.warn(f"{op.key}.{name}", f"{list(value)} is not square; prodrec uses square inputs of "
                                              f"{max(value)} x {max(value)}")
        return max(value)
    op.notes.fail(f"{op.key}.{name}", f"expected a size in pixels (an integer or [w, h]), got {brief(value)}")
    return None


def _resampling(op: Section) -> None:
    if op.get("interpolation") not in (None, "bilinear"):
        op.notes.warn(f"{op.key}.interpolation", "prodrec resizes with bilinear interpolation (PaddleClas's default)")
    if str(op.get("backend", "cv2")).lower() != "cv2":
        op.notes.warn(f"{op.key}.backend", "prodrec resizes with OpenCV (PaddleClas's default backend cv2)")


def _read_ops(ops: Any, key: str, notes: Notes, *, train: bool) -> _Pipeline:
    pipeline = _Pipeline()
    if not isinstance(ops, list):
        notes.fail(key, f"expected a list of transform ops, got {brief(ops)}")
        return pipeline
    for index, entry in enumerate(ops):
        if not (isinstance(entry, dict) and len(entry) == 1):
            notes.fail(f"{key}[{index}]", f"each op is one name with its parameters, got {brief(entry)}")
            continue
        ((name, params),) = entry.items()
        op = Section(params, f"{key}[{index}].{name}", notes)
        if name == "DecodeImage":
            if op.get("to_rgb", True) is not True:
                notes.warn(f"{op.key}.to_rgb", "prodrec always decodes images to RGB")
            op.skip("channel_first", "to_np")
        elif name == "ResizeImage":
            if op.get("resize_short") is not None:
                pipeline.size = _side(op, "resize_short")
                notes.warn(f"{op.key}.resize_short", "keeping the aspect ratio is not supported; prodrec resizes "
                                                     "the whole image to image_size x image_size")
            else:
                pipeline.size = _side(op, "size")
            _resampling(op)
            op.skip("return_numpy")
        elif name in ("CropImage", "RandCropImage"):
            pipeline.size = _side(op, "size")
            what = "centre crop" if name == "CropImage" else (
                f"random resized crop (scale {op.get('scale', [0.08, 1.0])}, ratio "
                f"{op.get('ratio', [round(3 / 4, 4), round(4 / 3, 4)])})")
            notes.warn(op.key, f"{what} is not supported; prodrec resizes the whole image to "
                               f"{pipeline.size} x {pipeline.size} instead")
            if name == "RandCropImage":
                _resampling(op)
        elif name == "RandFlipImage":
            if op.get("flip_code", 1) == 1:
                pipeline.flip = 0.5
            else:
                notes.warn(f"{op.key}.flip_code", "only horizontal flips (flip_code 1) are supported; left out")
        elif name == "NormalizeImage":
            scale = op.number("scale", 1 / 255, text=True)
            mean, std = op.get("mean", [0.485, 0.456, 0.406]), op.get("std", [0.229, 0.224, 0.225])
            for what, values in (("mean", mean), ("std", std)):
                if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float))
                                                                             for v in values)):
                    notes.fail(f"{op.key}.{what}", f"expected three numbers (R, G, B), got {brief(values)}")
            pipeline.normalize, pipeline.normalize_key = (scale, mean, std), op.key
            if op.get("output_fp16", False) or op.get("channel_num", 3) != 3:
                notes.warn(op.key, "output_fp16 and channel_num 4 are not supported (prodrec feeds 3-channel float32)")
            op.skip("order")
        elif name == "RandomErasing":
            _erasing(op, pipeline)
        elif name != "ToCHWImage":
            notes.warn(op.key, "transform op not supported by prodrec; left out")
            continue
        op.finish()
        if not train and name in ("RandFlipImage", "RandomErasing"):
            notes.warn(op.key, "random augmentation is not applied at evaluation")
    return pipeline


def _erasing(op: Section, pipeline: _Pipeline) -> None:
    pipeline.erasing = op.number("EPSILON", 0.5, text=True)
    for name, ours in PRODREC_ERASING.items():
        value = op.number(name, ours, text=True)
        if value is not None and not math.isclose(value, ours):
            ours_text = ", ".join(f"{key} {number}" for key, number in PRODREC_ERASING.items())
            op.notes.warn(f"{op.key}.{name}", f"{value} is not supported; prodrec erases with {ours_text}")
    mean = op.get("mean", [0.0, 0.0, 0.0])
    if op.get("mode", "const") != "const" or mean != [0, 0, 0]:
        op.notes.warn(op.key, f"prodrec fills the erased box with 0 (mode const, mean [0, 0, 0]), not mode "
                              f"{op.get('mode', 'const')} / mean {mean}")
    if op.get("use_log_aspect", False) or op.get("attempt", 100) != 100:
        op.notes.warn(op.key, "use_log_aspect and attempt are not supported (prodrec: albumentations Erasing)")
    if pipeline.normalize is None:
        op.notes.warn(op.key, "comes before NormalizeImage; prodrec erases after normalising (0 = the mean colour)")


def _dataset(block: Section, base_dir: Optional[str]) -> tuple:
    """``(list file, image root, transform_ops, their key)`` of a ``dataset`` block (ImageNetDataset)."""
    dataset = block.child("dataset")
    if not dataset.data:
        block.notes.fail(dataset.key, "required: name ImageNetDataset, image_root, cls_label_path, transform_ops")
        return None, None, [], f"{dataset.key}.transform_ops"
    if dataset.get("name") != "ImageNetDataset":
        block.notes.fail(f"{dataset.key}.name", f"{dataset.get('name')!r} is not supported; prodrec reads "
                                                "ImageNetDataset lists ('relative/path label' lines)")
    if str(dataset.get("delimiter", " ")).strip():
        block.notes.fail(f"{dataset.key}.delimiter", "prodrec reads lists split at whitespace")
    paths = []
    for name in ("cls_label_path", "image_root"):
        value = dataset.get(name)
        if not isinstance(value, str) or not value:
            block.notes.fail(f"{dataset.key}.{name}", f"a path is required, got {brief(value)}")
        paths.append(os.path.join(base_dir, value) if base_dir and isinstance(value, str) else value)
    dataset.skip("relabel")
    ops = dataset.get("transform_ops", [])
    dataset.finish()
    return paths[0], paths[1], ops, f"{dataset.key}.transform_ops"


def translate_dataloader(section: Section, *, image_shape: Optional[int], mean_std: Optional[tuple],
                         base_dir: Optional[str] = None) -> Tuple[Dict[str, Any], int]:
    """The native ``DataLoader`` section and the image size of a PaddleClas ``DataLoader`` section.

    Args:
        section: The PaddleClas ``DataLoader``.
        image_shape: The side of ``Global.image_shape`` (checked against the transforms).
        mean_std: The backbone's ``(mean, std)`` that prodrec normalises with, or None if unknown.
        base_dir: Folder that relative paths are relative to (None: the working directory).
    """
    notes = section.notes
    train = section.child("Train")
    train_list, train_root, ops, ops_key = _dataset(train, base_dir)
    pipeline = _read_ops(ops, ops_key, notes, train=True)
    size = pipeline.size or image_shape or 224
    if pipeline.size is None:
        notes.warn(ops_key, f"no ResizeImage/RandCropImage; prodrec resizes to {size} (Global.image_shape)")
    elif image_shape is not None and image_shape != size:
        notes.warn("Global.image_shape", f"{image_shape} differs from the training transform's {size}; prodrec "
                                         f"trains, evaluates and embeds at {size}")
    _check_normalize(pipeline, ops_key, notes, mean_std)
    native: Dict[str, Any] = {"dataset": "list", "root": train_root, "train_list": train_list,
                              "horizontal_flip": pipeline.flip, "random_erasing": pipeline.erasing,
                              **_sampler(train.child("sampler"), notes)}
    loader = train.child("loader")
    if loader.get("num_workers") is not None:
        native["num_workers"] = loader.get("num_workers")
    loader.skip("use_shared_memory")
    loader.finish()
    train.finish()

    evaluation = section.child("Eval")
    single = "Query" not in evaluation and "Gallery" not in evaluation
    if not single:
        blocks = {"query": evaluation.child("Query"), "gallery": evaluation.child("Gallery")}
    else:
        blocks = {"query": evaluation}
        notes.warn(evaluation.key, "one dataset serves as query and gallery; as in PaddleClas, each image's match "
                                   "with itself is not removed, so Recall@K is trivially 1.0 and mAP inflated; give "
                                   "DataLoader.Eval.Query and DataLoader.Eval.Gallery blocks for honest numbers")
    for split, block in blocks.items():
        list_path, root, ops, ops_key = _dataset(block, base_dir)
        native[f"{split}_list"] = list_path
        if root is not None and train_root is not None and os.path.normpath(root) != os.path.normpath(train_root):
            native[f"{split}_image_root"] = root
        evaluated = _read_ops(ops, ops_key, notes, train=False)
        if evaluated.size is not None and evaluated.size != size:
            notes.warn(ops_key, f"evaluates at {evaluated.size}; prodrec evaluates at the training size {size}")
        if evaluated.normalize != pipeline.normalize:
            _check_normalize(evaluated, ops_key, notes, mean_std)
        sampler = block.child("sampler")
        if sampler.get("batch_size") is not None:
            native.setdefault("eval_batch_size", sampler.get("batch_size"))
        sampler.skip("name", "shuffle", "drop_last")
        sampler.finish()
        block.skip("loader")
        block.finish()
    if single:
        native["gallery_list"] = native["query_list"]
        if "query_image_root" in native:
            native["gallery_image_root"] = native["query_image_root"]
    else:
        evaluation.finish()
    section.finish()
    return native, size


def _check_normalize(pipeline: _Pipeline, key: str, notes: Notes, mean_std: Optional[tuple]) -> None:
    if pipeline.normalize is None:
        notes.warn(key, "no NormalizeImage; prodrec always normalises with the backbone's mean and std")
        return
    scale, mean, std = pipeline.normalize
    if scale is not None and not math.isclose(scale, 1 / 255, rel_tol=1e-4):
        notes.warn(f"{pipeline.normalize_key}.scale", f"{scale} is not supported; prodrec scales pixels by 1/255")
    if mean_std is not None and not (_close(mean, mean_std[0]) and _close(std, mean_std[1])):
        notes.warn(pipeline.normalize_key, f"mean {mean} / std {std} differ from the backbone's "
                                            f"{list(mean_std[0])} / {list(mean_std[1])}, which prodrec uses")


def _close(values: Sequence[float], reference: Sequence[float]) -> bool:
    try:
        return len(values) == len(reference) and all(math.isclose(a, b, abs_tol=1e-3)
                                                     for a, b in zip(values, reference))
    except TypeError:  # not numbers: already reported as an error
        return True


def _sampler(sampler: Section, notes: Notes) -> Dict[str, Any]:
    name = sampler.get("name")
    native: Dict[str, Any] = {}
    if sampler.get("batch_size") is None:
        notes.fail(f"{sampler.key}.batch_size", "required")
    else:
        native["batch_size"] = sampler.get("batch_size")
    if name in ("PKSampler", "DistributedRandomIdentitySampler"):
        instances = sampler.get("sample_per_id" if name == "PKSampler" else "num_instances")
        # Both samplers draw the images of an item with fewer than K images with replacement.
        native.update(sampler="pk", sample_per_id=instances, small_items="repeat")
        if sampler.get("sample_method", "id_avg_prob") != "id_avg_prob":
            notes.warn(f"{sampler.key}.sample_method", "prodrec's PK sampler draws items uniformly (id_avg_prob)")
    elif name in ("DistributedBatchSampler", "BatchSampler"):
        native["sampler"] = "random"
    else:
        notes.fail(f"{sampler.key}.name", f"{brief(name)} is not supported; use PKSampler, "
                                          "DistributedRandomIdentitySampler or DistributedBatchSampler")
    if sampler.get("shuffle", True) is not True:
        notes.warn(f"{sampler.key}.shuffle", "prodrec always shuffles the training data")
    if sampler.get("drop_last", name == "PKSampler") is not True:
        notes.warn(f"{sampler.key}.drop_last", "prodrec drops the last incomplete training batch")
    sampler.finish()
    return native
