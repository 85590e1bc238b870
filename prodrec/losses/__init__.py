"""Losses: the classification heads (ArcMargin, FC), pytorch-metric-learning adapters and the weighted sum
a config names."""
from prodrec.losses.build import (ArcMarginLoss, FCClassifierLoss, MinedLoss, WeightedLoss, triplet_loss_v2,
                                  build_loss, build_pml_object, LOSSES)

__all__ = ["ArcMarginLoss", "FCClassifierLoss", "MinedLoss", "WeightedLoss", "triplet_loss_v2", "build_loss", "LOSSES",
           "build_pml_object"]
