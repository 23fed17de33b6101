"""Routing classification: accuracy on insuranceqa-zh `valid` and single-threaded decisions per second.

Trains the production classifier (`routing_service.domain.classifier.train`) on `train`, then on
`valid` reports accuracy (overall and per domain), how many questions the difficulty rules would
flag for low confidence or several domains, and the speed of the two paths a ticket takes:
`predict` alone, and the full decision (a few lead rules, the model, difficulty and urgency).
Each is a single-threaded loop over the 2,000 `valid` questions, after one warm-up pass.

    uv run python bench/classifier_bench.py

Writes bench/results/classifier.json and classifier.md. The data is read from `../shared/data`
relative to the repository root and must be there: the benchmark fails rather than guess.
"""

from __future__ import annotations

import gzip
import json
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpdesk_shared.text import warm_up
from routing_service.domain.classifier import TrainedModel, train
from routing_service.domain.difficulty import DEFAULT_POLICY, Rule, TicketFacts, apply_rules, decide

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "insuranceqa-zh"
RESULTS = Path(__file__).resolve().parent / "results"
ACCURACY_BAR = 0.98
RUN = 50  # tickets classified together, about what a routing run holds at a few hundred tickets/s
RULES = [
    Rule(name="urgent words", pattern="緊急|马上|立刻|asap", urgent=True),
    Rule(name="complaint words", pattern="投訴|投诉", category="complaint"),
    Rule(name="policy number", pattern=r"\bP\d{8}\b", is_regex=True, category="policy lookup"),
]


def load(split: str) -> list[tuple[str, str]]:
    path = DATA / f"{split}.json.gz"
    if not path.is_file():
        raise SystemExit(f"Labelled data missing: {path} (see ../shared/data/README.md)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [(q["zh"], q["domain"]) for q in json.load(f).values()]


def timed_loop(texts: list[str], fn: Callable[[str], object]) -> dict[str, float]:
    """Per-call latency over every text (one warm-up pass first), single-threaded."""
    for text in texts:
        fn(text)
    latencies = []
    started = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        fn(text)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "per_second": round(len(texts) / elapsed, 1),
        "mean_us": round(statistics.fmean(latencies) * 1e6, 1),
        "p50_us": round(latencies[len(latencies) // 2] * 1e6, 1),
        "p99_us": round(latencies[int(len(latencies) * 0.99)] * 1e6, 1),
        "max_us": round(latencies[-1] * 1e6, 1),
    }


def runs_per_second(texts: list[str], fn: Callable[[list[str]], object], run: int = RUN) -> dict[str, float]:
    """Texts per second when classified `run` at a time (as a routing run does), single-threaded."""
    runs = [texts[i : i + run] for i in range(0, len(texts), run)]
    for chunk in runs:  # warm-up pass
        fn(chunk)
    started = time.perf_counter()
    for chunk in runs:
        fn(chunk)
    elapsed = time.perf_counter() - started
    per_text = elapsed / len(texts)
    return {"run": run, "per_second": round(1 / per_text, 1), "mean_us": round(per_text * 1e6, 1)}


def per_domain(results: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Precision and recall per domain from (expected, predicted) pairs."""
    expected = Counter(e for e, _ in results)
    predicted = Counter(p for _, p in results)
    correct = Counter(e for e, p in results if e == p)
    return {
        domain: {
            "support": expected[domain],
            "precision": round(correct[domain] / predicted[domain], 4) if predicted[domain] else 0.0,
            "recall": round(correct[domain] / expected[domain], 4),
        }
        for domain in sorted(expected)
    }


def run() -> dict[str, Any]:
    warm_up()
    train_set, valid = load("train"), load("valid")
    started = time.perf_counter()
    model = train(train_set)
    train_seconds = time.perf_counter() - started
    blob = model.serialize()
    started = time.perf_counter()
    model = TrainedModel.load(blob)
    load_ms = (time.perf_counter() - started) * 1000

    predictions = [model.predict(text) for text, _ in valid]
    pairs = [(domain, p.domain) for (_, domain), p in zip(valid, predictions, strict=True)]
    accuracy = sum(e == p for e, p in pairs) / len(pairs)
    unsure = [
        expected == p.domain
        for (_, expected), p in zip(valid, predictions, strict=True)
        if p.confidence < DEFAULT_POLICY.low_confidence
    ]
    multi = [p for p in predictions if sum(s >= DEFAULT_POLICY.multi_domain_score for _, s in p.domains) >= 2]

    texts = [text for text, _ in valid]

    def full_decision(text: str) -> object:
        return decide(rules=apply_rules(RULES, text), prediction=model.predict(text), facts=TicketFacts())

    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "data": {"train": len(train_set), "valid": len(valid), "domains": len(model.classes)},
        "model": {
            "format": model.info.format,
            "c": model.info.c,
            "char_ngrams": list(model.info.char_ngrams),
            "temperature_scale": round(model.info.scale, 4),
            "train_seconds": round(train_seconds, 2),
            "cv_accuracy": round(model.info.cv_accuracy or 0.0, 4),
            "serialized_bytes": len(blob),
            "load_ms": round(load_ms, 1),
        },
        "accuracy": round(accuracy, 4),
        "accuracy_bar": ACCURACY_BAR,
        "meets_bar": accuracy >= ACCURACY_BAR,
        "difficulty_flags": {
            "low_confidence_share": round(len(unsure) / len(valid), 4),
            "low_confidence_accuracy": round(sum(unsure) / len(unsure), 4) if unsure else None,
            "multi_domain_share": round(len(multi) / len(valid), 4),
        },
        "predict": timed_loop(texts, model.predict),
        "predict_in_runs": runs_per_second(texts, model.predict_many),
        "decision": timed_loop(texts, full_decision),
        "per_domain": per_domain(pairs),
    }


def markdown(report: dict[str, Any]) -> str:
    m, flags, pr, dec = report["model"], report["difficulty_flags"], report["predict"], report["decision"]
    runs = report["predict_in_runs"]
    lines = [
        "# Routing classifier benchmark",
        "",
        f"Generated {report['generated_at']} · Python {report['machine']['python']} · single thread",
        "",
        f"Trained on insuranceqa-zh `train` ({report['data']['train']:,} questions, "
        f"{report['data']['domains']} domains), measured on `valid` ({report['data']['valid']:,}).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| **accuracy on valid** | **{report['accuracy']:.4f}** (bar {report['accuracy_bar']}: "
        f"{'met' if report['meets_bar'] else 'NOT met'}) |",
        f"| out-of-fold accuracy on train | {m['cv_accuracy']:.4f} |",
        f"| predict: decisions/s | {pr['per_second']:,.0f} |",
        f"| predict latency mean / p50 / p99 | {pr['mean_us']:.0f} / {pr['p50_us']:.0f} / "
        f"{pr['p99_us']:.0f} µs |",
        f"| predict {runs['run']} texts at a time (a routing run): texts/s | {runs['per_second']:,.0f} "
        f"({runs['mean_us']:.0f} µs each) |",
        f"| full decision (rules + model + difficulty): decisions/s | {dec['per_second']:,.0f} |",
        f"| full decision latency mean / p50 / p99 | {dec['mean_us']:.0f} / {dec['p50_us']:.0f} / "
        f"{dec['p99_us']:.0f} µs |",
        f"| training time | {m['train_seconds']} s |",
        f"| stored model size / load time | {m['serialized_bytes'] / 1024:,.0f} KiB / {m['load_ms']} ms |",
        f"| flagged low confidence (< {DEFAULT_POLICY.low_confidence}) | {flags['low_confidence_share']:.1%} "
        f"of tickets, {flags['low_confidence_accuracy'] or 0:.0%} of them right |",
        f"| flagged multi-domain (≥ 2 domains ≥ {DEFAULT_POLICY.multi_domain_score}) | "
        f"{flags['multi_domain_share']:.1%} of tickets |",
        "",
        f"Model: TF-IDF of jieba words + character {m['char_ngrams'][0]}–{m['char_ngrams'][1]}-grams, "
        f"LinearSVC C={m['c']}, softmax temperature scale {m['temperature_scale']} fitted out of fold.",
        "",
        "| domain | support | precision | recall |",
        "|---|---:|---:|---:|",
    ]
    for domain, row in report["per_domain"].items():
        lines.append(f"| {domain} | {row['support']} | {row['precision']:.3f} | {row['recall']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    report = run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "classifier.md").write_text(markdown(report), encoding="utf-8")
    pr, dec = report["predict"], report["decision"]
    print(
        f"accuracy {report['accuracy']:.4f} · predict {pr['per_second']:,.0f}/s (p50 {pr['p50_us']:.0f} µs)"
        f" · full decision {dec['per_second']:,.0f}/s → {RESULTS / 'classifier.md'}"
    )
    if not report["meets_bar"]:
        raise SystemExit(f"accuracy {report['accuracy']:.4f} is below the bar {ACCURACY_BAR}")


if __name__ == "__main__":
    main()
