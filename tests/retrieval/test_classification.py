import math

import cv2
import numpy as np
import pytest
import torch

from prodrec.retrieval import classification_accuracy, head_logits, topk_accuracy
from prodrec.config import HeadConfig
from prodrec.data import ImageList, load_image
from prodrec.data import eval_transform
from prodrec.losses import ArcMarginLoss, FCClassifierLoss, build_loss
from prodrec.models import Embedder

NAN = math.nan


def slow_topk_accuracy(logits, labels, ks):
    """The definition, one score at a time: correct at k when fewer than k other classes are not below the truth."""
    result = {}
    for k in ks:
        correct = 0
        for row, label in zip(logits, labels):
            not_below = sum(1 for j, score in enumerate(row) if j != label and not score < row[label])
            correct += not_below < k
        result[f"top{k}"] = correct / len(labels)
    return result


@pytest.mark.parametrize("logits, labels, expected", [
    ([[0.1, 0.7, 0.2]], [1], {"top1": 1.0, "top2": 1.0}),
    ([[0.1, 0.7, 0.2]], [2], {"top1": 0.0, "top2": 1.0}),
    ([[0.1, 0.7, 0.2]], [0], {"top1": 0.0, "top2": 0.0}),
    ([[0.5, 0.5, 0.0]], [0], {"top1": 0.0, "top2": 1.0}),           # a tie for first place is a miss at 1
    ([[0.5, 0.5, 0.5]], [1], {"top1": 0.0, "top2": 0.0}),           # constant scores: never correct below k = C
    ([[NAN, 0.5, 0.2]], [1], {"top1": 0.0, "top2": 1.0}),           # NaN counts as higher
    ([[NAN, 0.5, 0.2]], [0], {"top1": 0.0, "top2": 0.0}),           # a NaN true score is a miss
    ([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 9.0, 0.0], [2.0, 2.0, 1.0]], [2, 1, 1, 2],
     {"top1": 0.5, "top2": 0.75}),
], ids=["best", "second", "last", "tie", "constant", "nan-other", "nan-true", "four-rows"])
def test_hand_worked_cases(logits, labels, expected):
    assert topk_accuracy(logits, labels, ks=(1, 2)) == expected
    assert slow_topk_accuracy(logits, labels, (1, 2)) == expected


def test_k_at_least_the_number_of_classes_is_always_correct():
    assert topk_accuracy([[NAN, 0.0, 1.0]], [0], ks=(3, 10)) == {"top3": 1.0, "top10": 1.0}


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_slow_definition_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    logits = rng.integers(0, 4, size=(40, 7)).astype(np.float32)  # four values over seven classes: ties galore
    logits[rng.random(logits.shape) < 0.05] = np.nan
    labels = rng.integers(0, 7, size=40)
    expected = slow_topk_accuracy(logits.tolist(), labels.tolist(), (1, 2, 5))
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == pytest.approx(expected, abs=0)
    assert topk_accuracy(torch.from_numpy(logits), torch.from_numpy(labels), ks=(1, 2, 5)) == expected


def test_without_ties_it_is_torch_topk():
    logits, labels = torch.randn(200, 30, generator=torch.Generator().manual_seed(0)), torch.arange(200) % 30
    top = logits.topk(5, dim=1).indices
    assert topk_accuracy(logits, labels) == {"top1": (top[:, 0] == labels).sum().item() / 200,
                                             "top5": (top == labels[:, None]).any(1).sum().item() / 200}


@pytest.mark.parametrize("logits, labels, ks, message", [
    ([[0.1, 0.2]], [2], (1,), r"labels must lie in 0..1 .* got 2..2"),
    ([[0.1, 0.2]], [-1], (1,), "labels must lie in 0..1"),
    ([[0.1, 0.2]], [0.0], (1,), "labels must be integers"),
    ([[0.1, 0.2]], [0, 1], (1,), r"expected logits \[N, C\] and labels \[N\]"),
    ([0.1, 0.2], [0], (1,), r"expected logits \[N, C\]"),
    (np.zeros((0, 3)), np.zeros(0, int), (1,), "with N > 0"),
    ([[0.1, 0.2]], [0], (0,), "ks must be positive integers"),
    ([[0.1, 0.2]], [0], (), "ks must be positive integers"),
    ([[0.1, 0.2]], [0], (True,), "ks must be positive integers"),
])
def test_bad_input_says_what_is_wrong(logits, labels, ks, message):
    with pytest.raises(ValueError, match=message):
        topk_accuracy(logits, labels, ks=ks)


def test_head_logits_finds_the_classifier_in_a_loss():
    fc = FCClassifierLoss(5, 8)
    embeddings = torch.randn(3, 8)
    assert torch.equal(head_logits(fc)(embeddings), fc.fc(embeddings))
    loss = build_loss([{"TripletLossV2": {}}, {"CELoss": {}}], head=HeadConfig(name="ArcMargin", margin=0.15,
                                                                               scale=30), num_classes=5,
                      embedding_size=8)
    cosine = loss.terms["CELoss"].logits(embeddings)  # the unscaled cosine PaddleClas returns in eval mode
    assert torch.allclose(head_logits(loss)(embeddings), 30 * cosine, atol=1e-5)
    cosface = build_loss([{"CosFaceLoss": {}}], head=None, num_classes=5, embedding_size=8)
    assert head_logits(cosface)(embeddings).shape == (3, 5)
    with pytest.raises(ValueError, match="exactly one classifier head .* found 0"):
        head_logits(build_loss([{"TripletLossV2": {}}], head=None, num_classes=5, embedding_size=8))


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """Six random 40 px images, one per class."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(6):
        paths.append(str(folder / f"{index}.png"))
        cv2.imwrite(paths[-1], rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8))
    return ImageList(paths, np.arange(6), [str(i) for i in range(6)])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Embedder("test_resnet", embedding_size=8, image_size=32)


def _embeddings(model, images):
    """The model's raw embeddings of the listing, with its eval preprocessing, in one batch."""
    transform = eval_transform(model.image_size, model.mean, model.std)
    batch = torch.stack([transform(load_image(path)) for path in images.paths])
    with torch.inference_mode():
        return model.eval()(batch)


def test_classification_accuracy_is_topk_accuracy_of_the_head_on_the_embeddings(model, listing):
    head = FCClassifierLoss(6, 8)
    labels = torch.tensor([3, 1, 4, 1, 5, 2])
    images = ImageList(listing.paths, labels.numpy(), listing.classes)
    with torch.inference_mode():
        expected = topk_accuracy(head.get_logits(_embeddings(model, listing)), labels, ks=(1, 2, 3))
    model.train()
    for batch_size in (1, 4, 64):
        found = classification_accuracy(model, head, images, ks=(1, 2, 3), batch_size=batch_size, progress=False)
        assert found == {**expected, "num_images": 6}
    assert model.training and head.training  # modes restored


def test_a_head_of_class_prototypes_is_always_right(model, listing):
    head = ArcMarginLoss(6, 8, margin=0.15, scale=30)
    with torch.no_grad():
        head.W.copy_(_embeddings(model, listing).T)  # class i's weight is image i's embedding
    assert classification_accuracy(model, head, listing, progress=False) == {"top1": 1.0, "top5": 1.0,
                                                                              "num_images": 6}


def test_classification_accuracy_checks_its_input(model, listing):
    with pytest.raises(ValueError, match=r"labels must lie in 0..4"):
        classification_accuracy(model, FCClassifierLoss(5, 8), listing, progress=False)
    with pytest.raises(ValueError, match="non-empty ImageList"):
        classification_accuracy(model, FCClassifierLoss(6, 8), listing.paths, progress=False)
    with pytest.raises(ValueError, match="the head is on meta"):
        classification_accuracy(model, FCClassifierLoss(6, 8).to("meta"), listing, progress=False)
