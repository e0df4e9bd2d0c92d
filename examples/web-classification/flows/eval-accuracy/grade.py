from promptflow.core import tool


@tool
def grade(groundtruth: str, prediction: str) -> dict:
    """"Correct" when the prediction names the expected category (case and blanks ignored), and the same as a
    per-line score (1.0 or 0.0) so the gate can compare lines with the baseline."""
    expected = str(groundtruth or "").strip().lower()
    actual = str(prediction or "").strip().lower()
    right = expected == actual
    return {"grade": "Correct" if right else "Incorrect", "correct": 1.0 if right else 0.0}
