"""The classifier model on small hand-made data: fast path equals scikit-learn, round trips, refusals."""

from __future__ import annotations

import io
import json
from functools import partial

import numpy as np
import pytest
from routing_factories import ticket_created
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from helpdesk_shared import text as shared_text
from helpdesk_shared.text import normalise
from routing_service import classification
from routing_service.domain import classifier as classifier_module
from routing_service.domain import difficulty
from routing_service.domain.classifier import (
    FORMAT_VERSION,
    ModelFormatError,
    NotEnoughData,
    TrainedModel,
    TrainingParams,
    char_terms,
    train,
    word_terms,
)
from routing_service.domain.difficulty import Rule

PHRASES = {
    "auto-insurance": [
        "汽車保險怎麼續保",
        "車禍後車險理賠流程",
        "我的車被撞了保險賠嗎",
        "車險保費為什麼上漲",
        "新車要買哪種車險",
    ],
    "life-insurance": [
        "人壽保險的受益人怎麼改",
        "壽險保單現金價值",
        "終身壽險和定期壽險的差別",
        "壽險理賠需要死亡證明嗎",
        "壽險可以保多少年",
    ],
    "home-insurance": [
        "房屋保險包括水災嗎",
        "房子失火了屋主保險賠嗎",
        "屋主保險的保額怎麼算",
        "房屋險涵蓋地震嗎",
    ],
}
EXAMPLES = [(text, domain) for domain, texts in PHRASES.items() for text in texts]


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train(EXAMPLES, TrainingParams(calibration_folds=3))


def test_predicts_the_domain_of_unseen_questions_in_either_script(model: TrainedModel) -> None:
    assert model.predict("車險續保要準備什麼").domain == "auto-insurance"
    assert model.predict("车险续保要准备什么").domain == "auto-insurance"
    assert model.predict("ＨＯＭＥ 房屋保險 水災").domain == "home-insurance"
    prediction = model.predict("壽險受益人", top=2)
    assert prediction.domain == "life-insurance"
    assert prediction.domains[0][0] == "life-insurance"
    assert len(prediction.domains) == 2
    assert prediction.confidence == prediction.domains[0][1]
    assert prediction.domains[0][1] >= prediction.domains[1][1]


def test_probabilities_are_a_distribution(model: TrainedModel) -> None:
    for text in ("", "   ", "完全無關的句子", "汽車 房屋 壽險"):
        probs = model.probabilities(text)
        assert probs.shape == (3,)
        assert np.all(probs >= 0)
        assert probs.sum() == pytest.approx(1.0)


def test_fast_path_reproduces_scikit_learn_margins(model: TrainedModel) -> None:
    """The hand-rolled TF-IDF + dot product must give exactly what the fitted pipeline gives."""
    texts = [normalise(t) for t, _ in EXAMPLES]
    classes = sorted(PHRASES)
    y = [classes.index(d) for _, d in EXAMPLES]
    words = TfidfVectorizer(analyzer=word_terms, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer=partial(char_terms, low=1, high=2), sublinear_tf=True)
    svm = LinearSVC(C=0.5, random_state=0, max_iter=10_000).fit(
        hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr(), y
    )
    # Repeated words and characters exercise the sublinear tf; unknown words the vocabulary lookup.
    queries = [
        "車險續保",
        "房屋水災理賠 房屋 房屋",
        "壽險壽險壽險受益人變更",
        "unknown words only",
        "車 房 壽 車",
    ]
    normalised = [normalise(q) for q in queries]
    expected = svm.decision_function(
        hstack([words.transform(normalised), chars.transform(normalised)]).tocsr()
    )
    got = np.vstack([model.margins(q) for q in queries])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_serialised_model_round_trips(model: TrainedModel) -> None:
    loaded = TrainedModel.load(model.serialize())
    assert loaded.info == model.info
    for text in ("車險續保", "房屋水災", "壽險"):
        np.testing.assert_array_equal(loaded.probabilities(text), model.probabilities(text))


def test_load_refuses_garbage_and_other_formats(model: TrainedModel) -> None:
    with pytest.raises(ModelFormatError):
        TrainedModel.load(b"not a model")
    with np.load(io.BytesIO(model.serialize()), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["meta"]))
    for name, value in (("format", "tfidf-word-char-linearsvc/0"), ("classes", ["a", "b"])):
        altered = dict(arrays, meta=np.array(json.dumps({**meta, name: value})))
        buffer = io.BytesIO()
        np.savez(buffer, **altered)
        with pytest.raises(ModelFormatError):
            TrainedModel.load(buffer.getvalue())
    assert meta["format"] == FORMAT_VERSION


def test_refuses_to_train_on_too_little_data() -> None:
    with pytest.raises(NotEnoughData):
        train([(t, "auto-insurance") for t in PHRASES["auto-insurance"] * 3])
    with pytest.raises(NotEnoughData):
        train(EXAMPLES[:4] + EXAMPLES[-4:][:1])


def test_two_domains_and_a_singleton_domain_still_train() -> None:
    binary = [(t, d) for t, d in EXAMPLES if d != "home-insurance"]
    two = train(binary)
    assert two.classes == ("auto-insurance", "life-insurance")
    assert two.predict("車險保費").domain == "auto-insurance"
    assert two.predict("壽險保單").domain == "life-insurance"
    assert two.info.cv_accuracy is not None
    singleton = train([*binary, ("旅遊平安險可以退嗎", "travel-insurance")])
    assert singleton.info.cv_accuracy is None  # one example: nothing to hold out for calibration
    assert len(singleton.classes) == 3
    assert singleton.predict("車險保費").domain == "auto-insurance"


def test_a_run_folds_each_ticket_text_once_for_the_rules_and_the_model(
    model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    tickets = [
        ticket_created(subject=s, description="").data for s in ("汽車保險怎麼續保", "壽險保單", "理賠")
    ]
    rules = (Rule(name="claims", pattern="理賠", domain="claims"),)
    run = classification.Classifier(classification.ClassifierConfig(version=7, rules=rules), model)
    alone = [run.decide(ticket) for ticket in tickets]
    folded: list[str] = []

    def counting(text: str) -> str:
        folded.append(text)
        return normalise(text)

    for module in (shared_text, classifier_module, difficulty):
        monkeypatch.setattr(module, "normalise", counting)
    together = run.decide_many(tickets)
    # The same decisions as one by one (the run's scores are computed together: equal to rounding).
    assert [(d.domain, d.source, v) for d, v in together] == [(d.domain, d.source, v) for d, v in alone]
    assert [d.domain for d, _ in together] == ["auto-insurance", "life-insurance", "claims"]
    assert sorted(folded) == sorted(classification.ticket_text(t) for t in tickets)
