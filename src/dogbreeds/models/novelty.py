"""Novelty: "is this photo one of the dogs this model knows?" as a score and a threshold.

Method: Mahalanobis distance to the nearest class mean in the feature space just before the
classifier (Lee et al., 2018, "A Simple Unified Framework for Detecting Out-of-Distribution
Samples"), with one covariance shared by all classes.

Why this one rather than max-softmax, max-logit or energy: those read the classifier's output,
and a softmax over K breeds must spread all its mass over those K breeds, so a cat or a blank
image can still get "German shepherd 60 %" (the issue's example), and a dog of a breed the
model never saw is typically squeezed onto its nearest known breed with high confidence. The
features before the head describe the photo itself: a photo far from every breed's cloud of
training photos is novel however the head maps it. It costs one ``[N, D] x [D, D]`` product
at serving time, reuses the feature cache the transfer models already have (the pooled
backbone vectors), and needs no extra training or outlier data.

Measured (``python -m benchmarks.trust``, MobileNetV2-160 head; photos flagged at the 5 %
validation threshold): real non-dog photos from scikit-image 19/19 flagged on the 4-breed
sample and on the 25-breed dev set (AUROC 0.990 / 0.999; max-softmax 0.985 / 0.996, and it
lets one through on dev); blank images 4/4. A breed held out of training is flagged for 80 %
of its photos on the sample (AUROC 0.94) but only 11 % on the dev set (AUROC 0.82; max-softmax
0.91 there): a dog of an unfamiliar breed sits close to the known dogs in feature space. Most
of those get several candidates instead (``unsure``, "mixed breed?"), which is the useful
answer for a breed the model was never taught.

* Class means: per breed, over the **training** features.
* Shared covariance: Ledoit-Wolf shrinkage (``sklearn.covariance.LedoitWolf``) of the
  within-class deviations. With a few hundred photos and 1,280 dimensions the plain sample
  covariance is singular; shrinkage keeps it invertible and well-conditioned.
* Score: the smallest squared Mahalanobis distance to a class mean (higher = more novel).
* Threshold: chosen on **validation** dog photos (never seen by the fit), as the
  ``1 - false_alarm_rate`` quantile of their scores, so about that share of genuine dog
  photos of known breeds is flagged ``unknown``.

Features: for transfer models the head's input (the backbone's pooled vector, what the
feature cache holds; a spatial map is averaged over space); for the scratch CNN the output
of its ``pooling`` layer. :func:`probabilities_and_features` builds the model that returns
both from one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

HEAD_LAYER = "head"          # the classifier of transfer models (dogbreeds.models.builders)
POOLING_LAYER = "pooling"    # the scratch CNN's conv maps → vector layer


@dataclass(frozen=True)
class MahalanobisNovelty:
    """Class means ``[K, D]`` and the shared precision matrix ``[D, D]`` (inverse covariance)."""

    means: np.ndarray
    precision: np.ndarray

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance of each row to a class mean."""
        x = _as_matrix(features)
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have {x.shape[1]} dimensions, the novelty model "
                             f"{self.means.shape[1]}")
        # (x - m)^T P (x - m) = x^T P x - 2 x^T P m + m^T P m, for every pair at once.
        xp = x @ self.precision
        x_term = np.einsum("nd,nd->n", xp, x)
        m_term = np.einsum("kd,kd->k", self.means @ self.precision, self.means)
        distances = x_term[:, None] - 2.0 * xp @ self.means.T + m_term[None, :]
        return np.maximum(distances.min(axis=1), 0.0)


def _as_matrix(features: np.ndarray) -> np.ndarray:
    """``[N, D]`` float64; spatial maps ``[N, h, w, C]`` are averaged over space."""
    x = np.asarray(features, np.float64)
    if x.ndim == 4:
        x = x.mean(axis=(1, 2))
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D] (or [N, h, w, C]), got shape {x.shape}")
    return x


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray) -> MahalanobisNovelty:
    """Class means and the Ledoit-Wolf shared precision from (training) features.

    Raises:
        ValueError: with fewer than two rows, or a label with no row.
    """
    x = _as_matrix(features)
    labels = np.asarray(labels, np.int64)
    if len(x) < 2 or len(x) != len(labels):
        raise ValueError(f"need >= 2 feature rows with one label each, got {len(x)} rows and "
                         f"{len(labels)} labels")
    classes = np.arange(labels.max() + 1)
    counts = np.bincount(labels, minlength=len(classes))
    if (counts == 0).any():
        raise ValueError(f"no training features for class(es) {classes[counts == 0].tolist()}")
    means = np.stack([x[labels == k].mean(axis=0) for k in classes])
    within = x - means[labels]
    covariance = LedoitWolf(assume_centered=True).fit(within)
    return MahalanobisNovelty(means=means, precision=np.asarray(covariance.precision_))


def fit_threshold(scores: np.ndarray, false_alarm_rate: float) -> float:
    """Score above which a photo is novel: at most ``false_alarm_rate`` of ``scores`` (known
    dogs, from validation) lie above it.

    Raises:
        ValueError: for a rate outside [0, 1) or no scores.
    """
    if not 0.0 <= false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in [0, 1), got {false_alarm_rate!r}")
    scores = np.sort(np.asarray(scores, np.float64).ravel())
    if scores.size == 0:
        raise ValueError("the novelty threshold needs at least one validation score")
    # The k-th smallest score with k = ceil(n * (1 - rate)): floor(n * rate) scores lie above
    # it (fewer with ties). Rounded first: 200 * 0.95 is 190.00000000000003 in floating point.
    k = max(1, math.ceil(round(len(scores) * (1.0 - false_alarm_rate), 9)))
    return float(scores[k - 1])


def auroc(known_scores: np.ndarray, novel_scores: np.ndarray) -> float:
    """Area under the ROC curve of the score separating novel (positive) from known photos:
    1.0 = every novel photo scores above every known one, 0.5 = chance."""
    known, novel = np.ravel(known_scores), np.ravel(novel_scores)
    if len(known) == 0 or len(novel) == 0:
        return float("nan")
    truth = np.r_[np.zeros(len(known)), np.ones(len(novel))]
    return float(roc_auc_score(truth, np.r_[known, novel]))


def feature_tensor(model: keras.Model):
    """The tensor of ``model``'s graph that the classifier reads (see the module docstring).

    Raises:
        ValueError: when the model has neither a ``head`` nor a ``pooling`` layer.
    """
    names = {layer.name for layer in model.layers}
    if HEAD_LAYER in names:
        # The head is a nested model: its *call* inside this graph is its one inbound node,
        # whose input is the backbone's output in this graph (``head.input`` would be the
        # head's own Input, which is not connected to the image).
        tensor = model.get_layer(HEAD_LAYER)._inbound_nodes[0].input_tensors[0]
    elif POOLING_LAYER in names:
        tensor = model.get_layer(POOLING_LAYER).output
    else:
        raise ValueError(f"model {model.name!r} has no {HEAD_LAYER!r} or {POOLING_LAYER!r} "
                         "layer to take novelty features from")
    if len(tensor.shape) == 4:
        tensor = keras.layers.GlobalAveragePooling2D(name="novelty_features")(tensor)
    return tensor


def probabilities_and_features(model: keras.Model) -> keras.Model:
    """A model with ``model``'s input and two outputs: its probabilities and the novelty
    features, computed in one forward pass (shares ``model``'s layers and weights)."""
    return keras.Model(model.inputs, [model.output, feature_tensor(model)],
                       name=f"{model.name}_with_features")
