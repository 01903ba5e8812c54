"""How an answer is said: in words, as a table, as CSV, and labelled for the web page.

Every way of asking (``dogbreeds predict``, the web demo) says the same answer the same way."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # predict imports this module: a type-only import avoids the cycle
    from dogbreeds.serving.predict import PhotoResult

def display_name(breed: str) -> str:
    """Human-readable breed: ``golden_retriever`` → ``Golden retriever`` (``Great_Dane`` keeps
    its capital D: only underscores change and the first letter is raised)."""
    text = breed.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def answer_text(answer: dict[str, Any]) -> str:
    """The answer in words, as the table and the web demo say it."""
    status = answer.get("status", "ok")
    if status == "unknown":
        return "This doesn't look like a dog breed this model knows"
    if status == "unsure":
        names = ", ".join(display_name(b) for b in answer.get("candidates", []))
        return f"Not sure — one of: {names} (mixed breed?)"
    return f"Most likely: {display_name(answer['breed'])} ({100 * answer['probability']:.0f} %)"


def labelled_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer for a page: breeds with their readable ``label`` and the ``message``."""
    breed = answer.get("breed")
    return {**answer, "label": None if breed is None else display_name(breed),
            "candidates": [{"breed": b, "label": display_name(b)}
                           for b in answer.get("candidates", [])],
            "message": answer_text(answer)}


def format_table(results: Sequence[PhotoResult]) -> str:
    """A readable table: one line per (photo, rank), the answer in words on the first (ok,
    unsure with the candidates, or unknown); a failed photo gets one error line."""
    header = ("photo", "#", "breed", "probability", "answer")
    rows = [header]
    for result in results:
        for rank, pred in enumerate(result.predictions if result.ok else [], start=1):
            said = answer_text(result.answer) if rank == 1 and result.answer else ""
            rows.append((result.path if rank == 1 else "", str(rank),
                         display_name(pred["breed"]), f"{pred['probability']:.1%}", said))
    path_width = max(len(r.path) for r in results) if results else 0
    width = [max(path_width, len(header[0]))] + [max(len(row[i]) for row in rows)
                                                  for i in (1, 2)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:<{width[2]}}  {r[3]:>11}  {r[4]}"
             .rstrip() for r in rows]
    # Failed photos come last, one unpadded line each: a long message must not stretch the
    # breed column.
    lines += [f"{r.path:<{width[0]}}  {'-':>{width[1]}}  error: {r.error}"
              for r in results if not r.ok]
    return "\n".join(lines)


def csv_header(top_k: int) -> list[str]:
    ranks = [f"{name}_{i}" for i in range(1, top_k + 1) for name in ("breed", "prob")]
    return ["path", "status", "breed", "probability", "candidates", "novelty", *ranks, "error"]


def write_csv(results: Sequence[PhotoResult], out: TextIO, top_k: int) -> None:
    """One row per photo: path, status (ok/unsure/unknown/error), breed, probability,
    candidates (``;``-separated), novelty, breed_1, prob_1, … breed_k, prob_k, error."""
    writer = csv.writer(out)
    writer.writerow(csv_header(top_k))
    for result in results:
        cells: list[str] = []
        for i in range(top_k):
            if i < len(result.predictions):
                pred = result.predictions[i]
                cells += [pred["breed"], f"{pred['probability']:.6f}"]
            else:
                cells += ["", ""]
        answer = result.answer
        said = [answer.get("breed") or "",
                "" if "probability" not in answer else f"{answer['probability']:.6f}",
                ";".join(answer.get("candidates", [])),
                "" if answer.get("novelty") is None else f"{answer['novelty']:.4f}"]
        writer.writerow([result.path, result.status, *said, *cells, result.error or ""])
