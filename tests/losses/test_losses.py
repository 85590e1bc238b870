import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from prodrec.config import HeadConfig
from prodrec.losses import LOSSES, ArcMarginLoss, FCClassifierLoss, WeightedLoss, build_loss, triplet_loss_v2


def t(array):
    return torch.tensor(np.asarray(array))


@pytest.mark.parametrize("prefix,easy", [("arc_", False), ("arc_easy_", True)])
def test_arcmargin_matches_paddleclas(components, prefix, easy):
    loss = ArcMarginLoss(100, 64, margin=0.15, scale=30, easy_margin=easy)
    loss.W.data = t(components["arc_weight"])
    x = t(components["arc_x"]).requires_grad_(True)
    labels = t(components["arc_label"])
    value = loss(x, labels)
    value.backward()
    assert value.item() == pytest.approx(float(components[prefix + "ce"]), abs=1e-5)
    torch.testing.assert_close(x.grad, t(components[prefix + "grad_x"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(loss.W.grad, t(components[prefix + "grad_w"]), atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(loss.logits(x, labels), t(components[prefix + "logits_train"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(loss.logits(x), t(components[prefix + "logits_eval"]), atol=1e-5, rtol=0)


def test_arcmargin_margin_is_converted_from_radians_once():
    loss = ArcMarginLoss(10, 4, margin=0.15, scale=30)
    assert loss.margin == pytest.approx(0.15)  # PML stores radians after converting our degrees back
    assert isinstance(loss, pml_losses.ArcFaceLoss)


def slow_triplet_v2(x, labels, margin=0.5):
    """PaddleClas TripletLossV2 written as the obvious loop."""
    x = x / (x.norm(dim=1, keepdim=True) + 1e-12)
    total = 0.0
    for i in range(len(x)):
        d = [(x[i] - x[j]).pow(2).sum().clamp_min(1e-12).sqrt() for j in range(len(x))]
        pos = max(d[j] for j in range(len(x)) if labels[j] == labels[i])
        neg = min(d[j] for j in range(len(x)) if labels[j] != labels[i])
        total = total + torch.relu(pos - neg + margin)
    return total / len(x)


@pytest.mark.parametrize("case", ["tri_p8k2", "tri_p4k4", "tri_sep"])
def test_triplet_v2_matches_paddleclas_and_slow_loop(components, case):
    x = t(components[case + "_x"]).requires_grad_(True)
    labels = t(components[case + "_label"])
    value = triplet_loss_v2(margin=0.5)(x, labels)
    value.backward()
    assert value.item() == pytest.approx(float(components[case + "_loss"]), abs=1e-5)
    torch.testing.assert_close(x.grad, t(components[case + "_grad_x"]), atol=1e-5, rtol=0)
    assert value.item() == pytest.approx(slow_triplet_v2(x.detach(), labels).item(), abs=1e-5)


def test_triplet_v2_random_batches_match_slow_loop():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        labels = torch.arange(6).repeat_interleave(3)[torch.randperm(18, generator=gen)]
        x = torch.randn(18, 8, generator=gen)
        assert triplet_loss_v2(margin=0.3)(x, labels).item() == pytest.approx(
            slow_triplet_v2(x, labels, margin=0.3).item(), abs=1e-5
        )


def test_fc_ce_matches_paddleclas_with_and_without_label_smoothing(components):
    logits, labels = t(components["ce_logits"]), t(components["ce_label"])
    for smoothing, key in ((0.0, "ce_loss"), (0.1, "ce_ls0.1_loss")):
        head = FCClassifierLoss(50, 50, label_smoothing=smoothing)
        with torch.no_grad():
            head.fc.weight.copy_(torch.eye(50))
            head.fc.bias.zero_()
        assert head(logits, labels).item() == pytest.approx(float(components[key]), abs=1e-5)


def test_build_loss_seed_recipe_is_weighted_sum():
    torch.manual_seed(0)
    loss = build_loss(
        [{"CELoss": {"weight": 1.0}}, {"TripletLossV2": {"weight": 0.5, "margin": 0.5}}],
        head=HeadConfig(name="ArcMargin", margin=0.15, scale=30),
        num_classes=4,
        embedding_size=8,
    )
    x, labels = torch.randn(8, 8), torch.arange(4).repeat(2)
    total, terms = loss(x, labels)
    assert set(terms) == {"CELoss", "TripletLossV2"}
    assert total.item() == pytest.approx(terms["CELoss"].item() + 0.5 * terms["TripletLossV2"].item(), rel=1e-6)
    head = loss.terms["CELoss"]
    assert isinstance(head, ArcMarginLoss)
    assert head.margin == pytest.approx(0.15) and head.scale == 30
    assert any(p is head.W for p in loss.parameters())


def test_build_loss_any_pml_loss_by_name_with_miner_and_distance():
    loss = build_loss(
        [
            {"MultiSimilarityLoss": {"weight": 2.0, "alpha": 2, "miner": {"MultiSimilarityMiner": {"epsilon": 0.1}}}},
            {"ContrastiveLoss": {"distance": {"CosineSimilarity": {}}, "pos_margin": 1, "neg_margin": 0}},
            {"ProxyAnchorLoss": {"margin": 0.1}},
            {"CosFaceLoss": {"margin": 0.35}},  # its __init__ takes *args: sizes found on the base class
        ],
        head=None,
        num_classes=5,
        embedding_size=8,
    )
    x, labels = torch.randn(10, 8), torch.arange(5).repeat(2)
    total, terms = loss(x, labels)
    assert torch.isfinite(total)
    inner = loss.terms["ContrastiveLoss"].loss
    assert type(inner.distance).__name__ == "CosineSimilarity"
    assert loss.terms["ProxyAnchorLoss"].loss.proxies.shape == (5, 8)  # num_classes/embedding_size injected
    expected = 2.0 * pml_losses.MultiSimilarityLoss(alpha=2)(x, labels, loss.terms["MultiSimilarityLoss"].miner(x, labels))
    assert terms["MultiSimilarityLoss"].item() * 2.0 == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "entries,head,message",
    [
        ([{"NoSuchLoss": {}}], None, "unknown loss 'NoSuchLoss'"),
        ([{"CELoss": {}}], None, "needs a classification head"),
        ([{"CELoss": {"eps": 0.1}}], HeadConfig(), "unknown parameters"),
        ([{"TripletLossV2": {"weight": "x"}}], None, "weight must be a number"),
        ([{"TripletLossV2": {"feature_from": "logits"}}], None, "unsupported parameters"),
        ([{"ContrastiveLoss": {"bogus": 1}}], None, "cannot build PML ContrastiveLoss"),
        ([{"ContrastiveLoss": {"miner": {"NotAMiner": {}}}}], None, "must be a PML miner"),
    ],
)
def test_build_loss_errors_name_the_problem(entries, head, message):
    with pytest.raises(ValueError, match=message):
        build_loss(entries, head=head, num_classes=4, embedding_size=8)


def test_weighted_loss_checks_shapes():
    loss = WeightedLoss({"t": triplet_loss_v2()}, {"t": 1.0})
    with pytest.raises(ValueError, match=r"embeddings \[N, D\]"):
        loss(torch.randn(4, 8), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_builds_and_trains(name):
    embeddings = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = build_loss([{name: {"weight": 1.0}}], head=HeadConfig(name="ArcMargin", margin=0.15, scale=30.0),
                      num_classes=4, embedding_size=16)
    total, terms = loss(embeddings, labels)
    total.backward()
    assert list(terms) == [name] and torch.isfinite(total) and embeddings.grad.abs().sum() > 0


def test_a_registered_loss_is_built_by_name(monkeypatch):
    from prodrec.losses import build as build_module
    from prodrec.utils import Registry

    registry = Registry("loss", LOSSES)  # a copy, so the test leaves prodrec's registry as it was
    registry.register("CentreDistance", lambda params, *, where, **_: CentreDistance(**params))
    monkeypatch.setattr(build_module, "LOSSES", registry)
    loss = build_loss([{"CentreDistance": {"weight": 2.0, "power": 2}}], head=None, num_classes=3, embedding_size=4)
    monkeypatch.undo()
    assert isinstance(loss.terms["CentreDistance"], CentreDistance) and loss.weights == {"CentreDistance": 2.0}
    with pytest.raises(ValueError, match=r"unknown loss 'CentreDistance'; use one of \['CELoss', 'TripletLossV2'\]"):
        build_loss([{"CentreDistance": {}}], head=None, num_classes=3, embedding_size=4)


class CentreDistance(torch.nn.Module):
    def __init__(self, power: int = 1) -> None:
        super().__init__()
        self.power = power

    def forward(self, embeddings, labels):
        return (embeddings - embeddings.mean(0)).norm(dim=1).pow(self.power).mean()
