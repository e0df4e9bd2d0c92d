from typing import List

from promptflow.core import log_metric, tool


@tool
def calculate_accuracy(grades: List[str]) -> dict:
    """Aggregation over all lines: logs the metric "accuracy" (share of "Correct" grades, 0..1)."""
    total = len(grades)
    correct = sum(1 for g in grades if g == "Correct")
    accuracy = round(correct / total, 4) if total else 0.0
    log_metric("accuracy", accuracy)
    return {"accuracy": accuracy, "correct": correct, "total": total}
