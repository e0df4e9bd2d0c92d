"""Grade each predicted category against its label; the share that is right is the metric "accuracy"."""

from typing import TypedDict


class Grade(TypedDict):
    grade: str
    correct: float


class Accuracy:
    def __init__(self) -> None:  # prompt flow cannot read a class entry that inherits object.__init__
        pass

    def __call__(self, groundtruth: str, prediction: str) -> Grade:
        right = str(groundtruth or "").strip().lower() == str(prediction or "").strip().lower()
        return Grade(grade="Correct" if right else "Incorrect", correct=1.0 if right else 0.0)

    def __aggregate__(self, line_results: list) -> dict:
        total = len(line_results)
        correct = sum(1 for r in line_results if r["grade"] == "Correct")
        return {"accuracy": round(correct / total, 4) if total else 0.0, "correct": correct, "total": total}
