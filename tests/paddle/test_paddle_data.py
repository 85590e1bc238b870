import pytest

from prodrec.paddle import translate_dataloader
from prodrec.paddle import Notes, Section

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALIZE = {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def loader(train_ops, *, sampler=None, eval_ops=None, query_root="data/", gallery_root="data/", single=False):
    def dataset(split, ops, root):
        return {"dataset": {"name": "ImageNetDataset", "image_root": root, "cls_label_path": f"data/{split}.txt",
                            "transform_ops": ops}, "sampler": {"name": "DistributedBatchSampler", "batch_size": 32}}
    eval_ops = eval_ops if eval_ops is not None else [{"ResizeImage": {"size": 64}}, NORMALIZE]
    train = dataset("train", train_ops, "data/")
    train["sampler"] = sampler or {"name": "PKSampler", "batch_size": 16, "sample_per_id": 4}
    evaluation = dataset("val", eval_ops, query_root) if single else {
        "Query": dataset("query", eval_ops, query_root), "Gallery": dataset("gallery", eval_ops, gallery_root)}
    return {"Train": train, "Eval": evaluation}


def translate(data, image_shape=64, mean_std=IMAGENET, base_dir=None):
    notes = Notes()
    native, size = translate_dataloader(Section(data, "DataLoader", notes), image_shape=image_shape,
                                        mean_std=mean_std, base_dir=base_dir)
    return native, size, notes


def keys(notes):
    return sorted(warning.split(": ", 1)[0] for warning in notes.warnings)


def test_supported_ops_map_onto_prodrec_keys_without_warnings():
    ops = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": {"size": 64}},
           {"RandFlipImage": {"flip_code": 1}}, NORMALIZE,
           {"RandomErasing": {"EPSILON": 0.25, "sl": 0.02, "sh": 0.4, "r1": 0.3, "mean": [0.0, 0.0, 0.0]}},
           {"ToCHWImage": None}]
    native, size, notes = translate(loader(ops))
    assert size == 64 and notes.warnings == [] and notes.errors == []
    assert native == {"dataset": "list", "root": "data/", "train_list": "data/train.txt",
                      "query_list": "data/query.txt", "gallery_list": "data/gallery.txt", "horizontal_flip": 0.5,
                      "random_erasing": 0.25, "batch_size": 16, "sampler": "pk", "sample_per_id": 4,
                      "small_items": "repeat", "eval_batch_size": 32}


def test_what_prodrec_cannot_express_is_named():
    ops = [{"ResizeImage": {"size": [64, 48], "interpolation": "bicubic"}}, {"RandFlipImage": {"flip_code": 0}},
           {"RandomErasing": {"EPSILON": 0.5, "sl": 0.1, "r1": "1/3", "mean": [0.4, 0.4, 0.4]}},
           {"NormalizeImage": {"scale": 1.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}},
           {"AutoAugment": {}}]
    native, size, notes = translate(loader(ops, eval_ops=[{"ResizeImage": {"size": 80}}, NORMALIZE,
                                                          {"RandFlipImage": {}}]), image_shape=96)
    assert (size, native["horizontal_flip"], native["random_erasing"]) == (64, 0.0, 0.5)
    ops_key = "DataLoader.Train.dataset.transform_ops"
    assert keys(notes) == sorted([
        f"{ops_key}[0].ResizeImage.size", f"{ops_key}[0].ResizeImage.interpolation",
        f"{ops_key}[1].RandFlipImage.flip_code", f"{ops_key}[2].RandomErasing.sl", f"{ops_key}[2].RandomErasing.r1",
        f"{ops_key}[2].RandomErasing", f"{ops_key}[2].RandomErasing", f"{ops_key}[3].NormalizeImage.scale",
        f"{ops_key}[3].NormalizeImage", f"{ops_key}[4].AutoAugment", "Global.image_shape",
        *[f"DataLoader.Eval.{block}.dataset.transform_ops{op}" for block in ("Gallery", "Query")
          for op in ("", "[2].RandFlipImage")]])
    warnings = "\n".join(notes.warnings)
    assert "[64, 48] is not square; prodrec uses square inputs of 64 x 64" in warnings
    assert "RandomErasing.r1: 0.3333333333333333 is not supported" in warnings
    assert "comes before NormalizeImage" in warnings and "evaluates at 80" in warnings


def test_samplers_and_eval_layouts():
    identity = {"name": "DistributedRandomIdentitySampler", "batch_size": 8, "num_instances": 4, "drop_last": False}
    native, _, notes = translate(loader([{"ResizeImage": {"size": 64}}, NORMALIZE], sampler=identity,
                                        query_root="q/", gallery_root="g/"), base_dir="/base")
    assert (native["sampler"], native["batch_size"], native["sample_per_id"]) == ("pk", 8, 4)
    assert (native["root"], native["query_image_root"], native["gallery_image_root"]) == ("/base/data/", "/base/q/",
                                                                                          "/base/g/")
    assert native["train_list"] == "/base/data/train.txt"
    assert keys(notes) == ["DataLoader.Train.sampler.drop_last"]

    native, _, notes = translate(loader([{"ResizeImage": {"size": 64}}, NORMALIZE], single=True, query_root="v/"))
    assert native["query_list"] == native["gallery_list"] == "data/val.txt"
    assert native["query_image_root"] == native["gallery_image_root"] == "v/"
    assert keys(notes) == ["DataLoader.Eval"] and "inflated" in notes.warnings[0]


def test_untranslatable_data_settings_are_errors():
    data = loader([{"ResizeImage": {}}], sampler={"name": "WeightedSampler"})
    data["Train"]["dataset"].update(name="LogoDataset", delimiter=",", image_root=None)
    del data["Eval"]["Gallery"]["dataset"]
    _, _, notes = translate(data)
    assert sorted(error.split(": ", 1)[0] for error in notes.errors) == [
        "DataLoader.Eval.Gallery.dataset", "DataLoader.Train.dataset.delimiter", "DataLoader.Train.dataset.image_root",
        "DataLoader.Train.dataset.name", "DataLoader.Train.dataset.transform_ops[0].ResizeImage.size",
        "DataLoader.Train.sampler.batch_size", "DataLoader.Train.sampler.name"]


@pytest.mark.parametrize("mean_std, warned", [(IMAGENET, False), (((0.5,) * 3, (0.5,) * 3), True), (None, False)])
def test_normalisation_is_checked_against_the_backbone(mean_std, warned):
    _, _, notes = translate(loader([{"ResizeImage": {"size": 64}}, NORMALIZE]), mean_std=mean_std)
    assert any("differ from the backbone's" in warning for warning in notes.warnings) == warned
