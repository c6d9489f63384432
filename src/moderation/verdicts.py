"""What a check decided, with the scores it decided on: logged and carried in events."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Verdict:
    """`refused` with the `category` that refused it, or `held` (a score between the hold and
    the refuse thresholds: an operator decides) with the category that held it; `scores` are
    every detector score seen."""

    refused: bool
    category: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    check: str = ""
    held: bool = False

    def summary(self) -> str:
        """One line for logs and failure details: the decision, then the scores."""
        scores = ", ".join(f"{label}={score:.2f}" for label, score in sorted(self.scores.items()))
        decision = (
            f"refused: {self.category}"
            if self.refused
            else f"held: {self.category}"
            if self.held
            else "allowed"
        )
        return f"{self.check} {decision}" + (f" ({scores})" if scores else "")


ALLOWED = Verdict(refused=False, check="off")
