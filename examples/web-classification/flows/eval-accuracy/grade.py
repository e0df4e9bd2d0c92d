from promptflow.core import tool


@tool
def grade(groundtruth: str, prediction: str) -> str:
    """Return "Correct" when the prediction names the expected category (case and blanks ignored)."""
    expected = str(groundtruth or "").strip().lower()
    actual = str(prediction or "").strip().lower()
    return "Correct" if expected == actual else "Incorrect"
