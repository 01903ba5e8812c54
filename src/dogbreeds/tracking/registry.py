"""The model registry: register the selected model and decide who is ``champion``.

Every evaluation registers the selected model as a new version of ``registry.model_name``
(versions are never deleted or overwritten) — unless that very training run is already
registered on the same test data, in which case nothing is added and aliases stay. The
``champion`` alias — what ``models:/<name>@champion`` serves — moves to the new version only
when its accuracy on the judging photos (the *gate*, :mod:`dogbreeds.models.gate`: a source's
test photos, e.g. the shelter's own, or the whole test split) beats the champion's by at least
``min_improvement`` *on the same photos*; otherwise the new version becomes ``challenger``.
The first version is champion.

"Same photos" is decided by :func:`test_data_hash`, a hash of the photos themselves (path,
breed and the bytes of every file). A version records the hash of its whole test split and of
its gate's photos, the gate's source and its accuracy there as tags; when the champion's
recorded gate hash differs from today's (other breeds, another split, new shelter photos,
another gate source) the champion is re-evaluated on today's gate photos through its
registered pyfunc instead of comparing numbers measured on different data: a worse model
never replaces the champion. For traceability every version also carries
the git commit and the DVC data hashes from ``dvc.lock`` (:mod:`dogbreeds.tracking.lineage`).

The ``dogbreeds models`` / ``dogbreeds promote`` commands live in :mod:`registry_cli`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dogbreeds.hashing import digest, file_sha256
from dogbreeds.models.gate import Gate
from dogbreeds.settings import from_section, section

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_TEST_ACCURACY = "test_accuracy"
TAG_TEST_HASH = "test_data_hash"
# Which photos judged the version against the champion, and how it did there.
TAG_GATE_SOURCE = "gate_source"
TAG_GATE_ACCURACY = "gate_accuracy"
TAG_GATE_PHOTOS = "gate_photos"
TAG_GATE_HASH = "gate_data_hash"
_EPS = 1e-12  # float noise in "gain >= min_improvement"


@dataclass(frozen=True)
class RegistrySettings:
    """The ``registry`` section of params.yaml (read by ``evaluate`` and the CLI)."""

    model_name: str          # registered model name
    min_improvement: float   # test accuracy gain over the champion needed to move ``champion``

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RegistrySettings:
        """From the whole params tree; errors name the bad ``registry.*`` key."""
        return from_section(cls, section(params, "registry"), "registry")


@dataclass(frozen=True)
class PromotionDecision:
    """What happened to a newly registered version."""

    model_name: str
    version: str
    alias: str                      # champion | challenger
    promoted: bool
    reason: str
    new_score: float
    champion_version: str | None    # the champion before this decision
    champion_score: float | None    # its accuracy on the current gate photos
    champion_reevaluated: bool
    gate_source: str = "all"        # which photos judged (dogbreeds.models.gate)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(new_score: float, champion_score: float | None,
                     min_improvement: float, measure: str = "test accuracy") -> tuple[bool, str]:
    """Should the new model become champion?

    Promote when there is no champion, or when the new score beats the champion's by at
    least ``min_improvement`` (and by more than zero: a tie never replaces the champion).

    Args:
        measure: What the scores are, for the reason ("accuracy on shelter's 40 test photos").

    Returns:
        (promote, a one-line human-readable reason).
    """
    if champion_score is None:
        return True, f"first model: no champion yet ({measure} {new_score:.4f})"
    gain = new_score - champion_score
    if gain > _EPS and gain >= min_improvement - _EPS:
        return True, (f"{measure} {new_score:.4f} beats champion's {champion_score:.4f} "
                      f"by {gain:+.4f} (>= {min_improvement})")
    return False, (f"{measure} {new_score:.4f} vs champion's {champion_score:.4f} "
                   f"({gain:+.4f}): not better by at least {min_improvement}")


def test_data_hash(test_df: pd.DataFrame, root: Path = Path(".")) -> str:
    """A hash of the test set's content: every photo's path, breed and bytes (order-free)."""
    lines = sorted(
        f"{path}\t{breed}\t{file_sha256(Path(root) / path)}"
        for path, breed in zip(test_df["path"], test_df["breed"], strict=True)
    )
    return digest("\n".join(lines))


def version_tags(card: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, str]:
    """Tags of a new version: kind/backbone and flat metrics (as strings, as MLflow stores)."""
    tags = {"kind": card.get("kind"), "backbone": card.get("backbone") or "",
            "model": card.get("name"), "training_run_id": card.get("mlflow_run_id") or "",
            "image_size": card.get("image_size"), "n_classes": len(card.get("classes", []))}
    tags.update(metrics)
    return {k: str(v) for k, v in tags.items() if v is not None}


def version_with_alias(client: MlflowClient, name: str, alias: str = CHAMPION):
    """The version holding ``alias`` (champion), or None (also when the model is new)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def pyfunc_accuracy(model_uri: str, test_df: pd.DataFrame, root: Path = Path("."),
                    batch_size: int = 64) -> float:
    """Top-1 accuracy of a registered classifier (pyfunc) on a test frame.

    Breed *names* are compared, so a champion trained on another class list is scored fairly
    (a breed it never learned counts as a miss). The top-ranked breed counts, also when the
    answer is ``unknown`` (whose ``breed`` is empty): this is the accuracy the new model's
    test accuracy is compared with.
    """
    from dogbreeds.serving.pyfunc import load_classifier, predict_images

    model = load_classifier(model_uri)
    correct = 0
    paths, breeds = list(test_df["path"]), list(test_df["breed"])
    for start in range(0, len(paths), batch_size):
        images = [(Path(root) / p).read_bytes() for p in paths[start:start + batch_size]]
        answers = predict_images(model, images, top_k=1)
        predicted = [ranked[0]["breed"] for ranked in answers["top_k"]]
        expected = breeds[start:start + batch_size]
        correct += sum(p == b for p, b in zip(predicted, expected, strict=True))
    return correct / max(1, len(paths))


def recorded_score(tags: Mapping[str, str], gate_hash: str) -> float | None:
    """A version's recorded accuracy on exactly the photos hashed ``gate_hash``, or None.

    Its gate's, or its whole test split's when that split was these very photos (versions
    registered before gates existed record only the latter).
    """
    if tags.get(TAG_GATE_HASH) == gate_hash and TAG_GATE_ACCURACY in tags:
        return float(tags[TAG_GATE_ACCURACY])
    if tags.get(TAG_TEST_HASH) == gate_hash and TAG_TEST_ACCURACY in tags:
        return float(tags[TAG_TEST_ACCURACY])
    return None


def promote_new_version(client: MlflowClient, name: str, version: str, new_score: float,
                        test_hash: str, min_improvement: float,
                        reevaluate: Callable[[str], float],
                        measure: str = "test accuracy") -> PromotionDecision:
    """Compare a freshly registered version with the champion and set its alias.

    Args:
        new_score: the new version's accuracy on the judging photos.
        test_hash: :func:`test_data_hash` of the judging photos.
        reevaluate: scores a model URI on the judging photos; called only when the champion
            has no recorded accuracy on photos hashed ``test_hash``.
        measure: what the scores are, for the reason.
    """
    champion = version_with_alias(client, name)
    champion_score, reevaluated = None, False
    if champion is not None and str(champion.version) == str(version):
        champion = None  # cannot happen for a new version; guards manual calls
    if champion is not None:
        champion_score = recorded_score(champion.tags, test_hash)
        if champion_score is None:
            champion_score = float(reevaluate(f"models:/{name}@{CHAMPION}"))
            reevaluated = True
    promote, reason = decide_promotion(new_score, champion_score, min_improvement, measure)
    if reevaluated:
        reason += " (champion re-evaluated on the current photos)"
    alias = CHAMPION if promote else CHALLENGER
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), "promotion", reason)
    return PromotionDecision(
        model_name=name, version=str(version), alias=alias, promoted=promote, reason=reason,
        new_score=float(new_score),
        champion_version=None if champion is None else str(champion.version),
        champion_score=champion_score, champion_reevaluated=reevaluated,
    )


def registered_version_of(client: MlflowClient, name: str, training_run_id: str | None,
                          test_hash: str):
    """The version already registered from this training run on this test data, or None.

    ``evaluate`` reruns whenever any model changes; the selected model may be one that is
    already registered (e.g. only a losing model was retrained). Registering it again would
    only add a duplicate version and a meaningless challenger.
    """
    if not training_run_id:
        return None
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for version in versions:
        if (version.tags.get("training_run_id") == training_run_id
                and version.tags.get(TAG_TEST_HASH) == test_hash):
            return version
    return None


def unchanged_decision(client: MlflowClient, name: str, version, score: float) -> PromotionDecision:
    """Decision for a selected model that is already a registered version: aliases stay."""
    full = client.get_model_version(name, str(version.version))
    aliases = list(getattr(full, "aliases", []) or [])
    champion = version_with_alias(client, name)
    alias = CHAMPION if CHAMPION in aliases else (aliases[0] if aliases else "")
    return PromotionDecision(
        model_name=name, version=str(version.version), alias=alias, promoted=False,
        reason=f"unchanged: the selected model is already registered as version "
               f"{version.version}; aliases left as they are",
        new_score=score,
        champion_version=None if champion is None else str(champion.version),
        champion_score=None, champion_reevaluated=False,
    )


def register_and_promote(
    keras_model_path: Path,
    card: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    model_name: str,
    min_improvement: float,
    test_df: pd.DataFrame,
    root: Path = Path("."),
    extra_tags: Mapping[str, str] | None = None,
    example_image: bytes | None = None,
    trust_dir: Path | None = None,
    gate: Gate | None = None,
) -> PromotionDecision:
    """Log the model as the pyfunc (inside the active run), register it, tag it, promote it.

    Args:
        card: the model's ``card.json``.
        metrics: flat validation/test metrics; must hold ``test_accuracy`` (and
            ``gate_accuracy`` with a ``gate``).
        test_df: the current test frame (paths relative to ``root``).
        extra_tags: more version tags (git commit, DVC data hashes, evaluation run id).
        trust_dir: the model's trust bundle (:mod:`dogbreeds.models.trust`): the pyfunc
            carries and applies it, and its temperature and thresholds become version tags.
        gate: which of the test photos judge it against the champion; all of them by default.
    """
    from dogbreeds.models.trust import load_trust  # here: it loads TensorFlow, the CLI need not
    from dogbreeds.serving.pyfunc import log_classifier

    client = MlflowClient()
    test_hash = test_data_hash(test_df, root)
    if gate is None:
        gate_name, gate_df, score = "all", test_df, float(metrics[TAG_TEST_ACCURACY])
    else:
        gate_name, gate_df, score = gate.name, gate.rows(test_df), float(metrics[TAG_GATE_ACCURACY])
    existing = registered_version_of(client, model_name, card.get("mlflow_run_id"), test_hash)
    if existing is not None:
        return replace(unchanged_decision(client, model_name, existing, score),
                       gate_source=gate_name)
    info = log_classifier(
        Path(keras_model_path), list(card["classes"]), int(card["image_size"]),
        registered_model_name=model_name, example_image=example_image,
        metadata={"kind": card.get("kind"), "backbone": card.get("backbone"),
                  "source_model": card.get("name")},
        trust_dir=trust_dir,
    )
    version = str(info.registered_model_version)
    gate_hash = test_hash if gate_df is test_df else test_data_hash(gate_df, root)
    tags = {**version_tags(card, metrics), TAG_TEST_HASH: test_hash,
            TAG_GATE_SOURCE: gate_name, TAG_GATE_ACCURACY: score,
            TAG_GATE_PHOTOS: len(gate_df), TAG_GATE_HASH: gate_hash, **(extra_tags or {})}
    if trust_dir is not None:
        tags.update(load_trust(trust_dir).tags())
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    decision = promote_new_version(
        client, model_name, version, score, gate_hash, min_improvement,
        reevaluate=lambda uri: pyfunc_accuracy(uri, gate_df, root),
        measure=f"accuracy on {gate_name}'s {len(gate_df)} test photos")
    return replace(decision, gate_source=gate_name)


def record_decision(decision: PromotionDecision) -> None:
    """Tag the active (stage) run with the registered version and what became of it."""
    mlflow.set_tags({"dogbreeds.registered_version": decision.version,
                     "dogbreeds.promotion": decision.alias,
                     "dogbreeds.promotion_reason": decision.reason[:5000],
                     "dogbreeds.gate_source": decision.gate_source})
    mlflow.log_metric("promoted", int(decision.promoted))


def register_selected(keras_model_path: Path, card: Mapping[str, Any],
                      metrics: Mapping[str, Any], settings: RegistrySettings, *,
                      test_df: pd.DataFrame, root: Path,
                      extra_tags: Mapping[str, str],
                      trust_dir: Path | None = None,
                      gate: Gate | None = None) -> PromotionDecision:
    """:func:`register_and_promote` the selected model under ``settings``, with the first test
    photo as its input example, and record the decision on the active run."""
    decision = register_and_promote(
        keras_model_path, card, metrics, model_name=settings.model_name,
        min_improvement=settings.min_improvement, test_df=test_df, root=root,
        extra_tags=extra_tags, example_image=(Path(root) / test_df["path"].iloc[0]).read_bytes(),
        trust_dir=trust_dir, gate=gate,
    )
    record_decision(decision)
    return decision
